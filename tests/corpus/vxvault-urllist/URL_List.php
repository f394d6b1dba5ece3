<pre>
VX Vault last 100 Links
Mon, 17 Aug 2015 14:36:19 +0000

http://example.com/bad/program.exe
http://198.51.100.42/d/svchost.exe
http://files.example.net/load/Invoice_09.zip
http://203.0.113.9:8080/bins/mips
https://cdn.example.org/wp-content/plugins/x/update.exe
</pre>
