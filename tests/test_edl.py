"""The edl adapter: lists written by sharing passes, served over HTTP on 127.0.0.1."""

from __future__ import annotations

import base64
import os
import socket
from contextlib import asynccontextmanager
from email.utils import formatdate

import httpx
import msgspec
import pytest
import structlog
import trio
import trio.testing

from ctd.adapters.edl.adapter import EdlAdapter, write_list
from ctd.adapters.edl.server import Gate, ServerSettings, _connection, basic_ok, not_modified, parse_bind, route
from ctd.config import parse_config
from ctd.errors import ConfigError, SourceUnavailable
from ctd.model import now
from ctd.sharing.actor import Sharer
from tests.daemonproc import DaemonProc, short_tmpdir, wait_for
from tests.fake_adapters import Watched
from tests.fakestore import FakeStore
from tests.storeutil import ingest, s


@pytest.fixture
def store(tmp_path):
    st = FakeStore(str(tmp_path / "db"))
    yield st
    st.close()


def config(tmp_path, fw="", params='{ name = "urls" }', rule="type = url", extra=""):
    return parse_config(f"""
[daemon]
state_dir = "{tmp_path}/var"
[plugins.a]
adapter = "file"
pull = false
[plugins.fw]
adapter = "edl"
pull = false
bind = "127.0.0.1:0"
{fw}
[rules.r]
filter = "{rule}"
[sharing.s]
sources = ["a"]
rule = "r"
destination = "fw"
action = "list"
params = {params}
{extra}""")


def sharer(cfg, store, name="s"):
    sh = cfg.sharing[name]
    return Sharer(name, sh, cfg.rules[sh.rule], cfg.plugins["fw"], EdlAdapter("fw", cfg.plugins["fw"].options), store)


@asynccontextmanager
async def serving(cfg):
    """The fw plugin's server (its own adapter instance) and a client for it."""
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(EdlAdapter("fw", cfg.plugins["fw"].options).serve)
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}", trust_env=False) as client:
            yield client
        nursery.cancel_scope.cancel()


def lines(resp):
    return resp.text.splitlines()


def urls(n, t):
    return [s(f"http://{i}.example/", "url", last_seen=t - i) for i in range(n)]


class TestPipeline:
    async def test_shared_list_is_served(self, tmp_path, store):
        """A sharing pass writes the list; the server serves its values, newest first, as UTF-8 text."""
        t = now()
        ingest(store.conn, "a", [*urls(2, t), s("evil.example", "domain")], now=t)
        cfg = config(tmp_path)
        await sharer(cfg, store).share_once()
        async with serving(cfg) as client:
            r = await client.get("/edl/urls.txt")
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/plain; charset=utf-8"
        assert lines(r) == ["http://0.example/", "http://1.example/"]

    async def test_lists_live_under_state_dir(self, tmp_path):
        """Lists default to <state_dir>/edl/<plugin>; an explicit lists_dir is kept."""
        assert config(tmp_path).plugins["fw"].options.lists_dir == f"{tmp_path}/var/edl/fw"
        cfg = config(tmp_path, fw=f'lists_dir = "{tmp_path}/mine"')
        assert cfg.plugins["fw"].options.lists_dir == f"{tmp_path}/mine"

    async def test_empty_list_is_empty_200(self, tmp_path, store):
        """With nothing to share the list is served as 200 with an empty body, never 404."""
        cfg = config(tmp_path)
        await sharer(cfg, store).share_once()
        async with serving(cfg) as client:
            r = await client.get("/edl/urls.txt")
        assert (r.status_code, r.content) == (200, b"")

    async def test_withdrawn_ioc_disappears(self, tmp_path, store):
        """An IoC retracted by its source is missing from the next fetched list."""
        t = now()
        cfg = config(tmp_path)
        sh = sharer(cfg, store)
        ingest(store.conn, "a", urls(2, t), now=t, snapshot_end=True)
        await sh.share_once()
        async with serving(cfg) as client:
            assert len(lines(await client.get("/edl/urls.txt"))) == 2
            ingest(store.conn, "a", urls(1, t), now=t, snapshot_end=True)
            await sh.share_once()
            assert lines(await client.get("/edl/urls.txt")) == ["http://0.example/"]

    async def test_deleted_file_rewritten(self, tmp_path, store):
        """An unchanged list is not rewritten, but a deleted list file is written again by the next pass."""
        ingest(store.conn, "a", urls(1, now()), now=now())
        cfg = config(tmp_path)
        sh = sharer(cfg, store)
        await sh.share_once()
        assert (await sh.share_once()).unchanged
        path = tmp_path / "var" / "edl" / "fw" / "urls.txt"
        path.unlink()
        await sh.share_once()
        assert path.read_text() == "http://0.example/\n"

    async def test_limits_newest_first(self, tmp_path, store):
        """With max_entries = 3 of 5 the list holds the 3 newest."""
        t = now()
        ingest(store.conn, "a", urls(5, t), now=t)
        cfg = config(tmp_path, params='{ name = "urls", max_entries = 3 }')
        await sharer(cfg, store).share_once()
        async with serving(cfg) as client:
            r = await client.get("/edl/urls.txt")
        assert lines(r) == ["http://0.example/", "http://1.example/", "http://2.example/"]

    async def test_default_limit_is_50000(self, tmp_path):
        """A list without max_entries is limited to 50,000 entries."""
        cfg = config(tmp_path)
        assert EdlAdapter.limits("list", cfg.sharing["s"].params) == (50_000, None)

    async def test_two_sharings_one_list_rejected(self, tmp_path):
        """Two sharing configurations writing the same list on one plugin are a config error."""
        extra = (
            '[sharing.t]\nsources = ["a"]\nrule = "r"\ndestination = "fw"\naction = "list"\n'
            'params = { name = "urls" }\n'
        )
        with pytest.raises(ConfigError, match="both write 'urls'"):
            config(tmp_path, extra=extra)


class TestHttp:
    async def _list(self, tmp_path, fw="", values=("a.example",)):
        cfg = config(tmp_path, fw=fw)
        await EdlAdapter("fw", cfg.plugins["fw"].options).replace(
            "list", cfg.sharing["s"].params, [item(v) for v in values]
        )
        return cfg

    async def test_unknown_list_404(self, tmp_path):
        """A list nobody writes is 404, and so are paths outside /edl/NAME.txt."""
        cfg = await self._list(tmp_path)
        async with serving(cfg) as client:
            for path in ("/edl/other.txt", "/edl/urls", "/urls.txt", "/edl/../var/urls.txt", "/edl/.ctd-x.txt"):
                assert (await client.get(path)).status_code == 404, path

    async def test_non_get_405(self, tmp_path):
        """Methods other than GET and HEAD are 405 with Allow."""
        cfg = await self._list(tmp_path)
        async with serving(cfg) as client:
            r = await client.post("/edl/urls.txt", content=b"x")
        assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"

    async def test_head(self, tmp_path):
        """HEAD gives the length and validators without the body."""
        cfg = await self._list(tmp_path)
        async with serving(cfg) as client:
            r = await client.head("/edl/urls.txt")
        assert r.status_code == 200 and r.content == b""
        assert r.headers["content-length"] == str(len("a.example\n")) and r.headers["etag"]

    async def test_if_none_match_304(self, tmp_path):
        """A request with the current ETag gets 304; after a change the old ETag gets the new list."""
        cfg = await self._list(tmp_path)
        async with serving(cfg) as client:
            etag = (await client.get("/edl/urls.txt")).headers["etag"]
            r = await client.get("/edl/urls.txt", headers={"If-None-Match": etag})
            assert (r.status_code, r.content, r.headers["etag"]) == (304, b"", etag)
            await self._list(tmp_path, values=("b.example",))
            r = await client.get("/edl/urls.txt", headers={"If-None-Match": etag})
        assert r.status_code == 200 and lines(r) == ["b.example"] and r.headers["etag"] != etag

    async def test_if_modified_since_304(self, tmp_path):
        """If-Modified-Since at or after Last-Modified gets 304; before it gets the list."""
        cfg = await self._list(tmp_path)
        async with serving(cfg) as client:
            modified = (await client.get("/edl/urls.txt")).headers["last-modified"]
            r = await client.get("/edl/urls.txt", headers={"If-Modified-Since": modified})
            assert r.status_code == 304
            r = await client.get("/edl/urls.txt", headers={"If-Modified-Since": formatdate(0, usegmt=True)})
        assert r.status_code == 200

    async def test_basic_auth(self, tmp_path):
        """With username/password a request without or with wrong credentials is 401; right ones get the list."""
        cfg = await self._list(tmp_path, fw='username = "fw"\npassword = "s3cret"')
        async with serving(cfg) as client:
            r = await client.get("/edl/urls.txt")
            assert r.status_code == 401 and r.headers["www-authenticate"] == 'Basic realm="ctd"'
            assert (await client.get("/edl/urls.txt", auth=("fw", "wrong"))).status_code == 401
            assert (await client.get("/edl/urls.txt", auth=("other", "s3cret"))).status_code == 401
            r = await client.get("/edl/urls.txt", auth=("fw", "s3cret"))
        assert r.status_code == 200 and lines(r) == ["a.example"]

    async def test_auth_failures_logged_without_secrets(self, tmp_path):
        """Wrong credentials and a wrong path token are logged as warnings that hold no secret."""
        cfg = await self._list(tmp_path, fw='username = "fw"\npassword = "s3cret"\npath_token = "t0ken"')
        logged = Watched()

        def wake(logger: object, method: str, event: dict) -> dict:
            logged.changed()  # the waiter runs after this entry is captured
            return event

        with structlog.testing.capture_logs(processors=[wake]) as logs:
            async with serving(cfg) as client:
                await client.get("/edl/t0ken/urls.txt", auth=("fw", "guess"))
                await client.get("/edl/guess/urls.txt", auth=("fw", "s3cret"))
                await client.get("/edl/t0ken/urls.txt", auth=("fw", "s3cret"))
                with trio.fail_after(5):  # the server logs after the last byte: wait for it
                    await logged.wait_until(lambda: sum(e.get("ctd_event") == "edl_access" for e in logs) >= 3)
        failed = [e for e in logs if e.get("ctd_event") == "edl_auth_failed"]
        assert [e["reason"] for e in failed] == ["basic auth", "path token"]
        assert all(e["log_level"] == "warning" for e in failed)
        access = [e for e in logs if e.get("ctd_event") == "edl_access"]
        assert [e["status"] for e in access] == [401, 404, 200]
        for secret in ("s3cret", "t0ken", "guess"):
            assert secret not in repr(logs)

    async def test_password_file(self, tmp_path):
        """The password can come from password_file (a secret field)."""
        (tmp_path / "pw").write_text("from-file\n")
        cfg = await self._list(tmp_path, fw=f'username = "fw"\npassword_file = "{tmp_path}/pw"')
        async with serving(cfg) as client:
            assert (await client.get("/edl/urls.txt", auth=("fw", "from-file"))).status_code == 200

    async def test_path_token(self, tmp_path):
        """With path_token the list is only at /edl/<token>/NAME.txt; the plain path and a wrong token are 404."""
        cfg = await self._list(tmp_path, fw='path_token = "Zm9vYmFy-42"')
        async with serving(cfg) as client:
            assert (await client.get("/edl/Zm9vYmFy-42/urls.txt")).status_code == 200
            assert (await client.get("/edl/urls.txt")).status_code == 404
            assert (await client.get("/edl/wrong/urls.txt")).status_code == 404

    async def test_pipelined_keep_alive(self, tmp_path):
        """Two requests sent at once on one connection get two responses on it."""
        cfg = await self._list(tmp_path)
        async with trio.open_nursery() as nursery:
            host, port = await nursery.start(EdlAdapter("fw", cfg.plugins["fw"].options).serve)
            stream = await trio.open_tcp_stream(host, port)
            req = b"GET /edl/urls.txt HTTP/1.1\r\nHost: x\r\n\r\n"
            await stream.send_all(req + req[:-2] + b"Connection: close\r\n\r\n")
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
            await stream.aclose()
            nursery.cancel_scope.cancel()
        assert data.count(b"HTTP/1.1 200 ") == 2 and data.count(b"a.example\n") == 2

    async def test_slow_client_does_not_block_others(self, tmp_path):
        """A client that opens a connection and never finishes a request does not delay another client."""
        cfg = await self._list(tmp_path)
        async with serving(cfg) as client:
            host, port = client.base_url.host, client.base_url.port
            slow = await trio.open_tcp_stream(host, port)
            await slow.send_all(b"GET /edl/urls")
            assert (await client.get("/edl/urls.txt")).status_code == 200
            await slow.aclose()

    async def test_oversized_head_431(self, tmp_path):
        """A request head over the limit is answered 431 and the connection closed."""
        cfg = await self._list(tmp_path)
        async with serving(cfg) as client:
            r = await client.get("/edl/urls.txt", headers={"X-Big": "x" * 65536})
        assert r.status_code == 431

    async def test_bind_in_use_is_unavailable(self, tmp_path):
        """A port already in use is SourceUnavailable (the daemon retries the service with backoff)."""
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            plugin = config(tmp_path).plugins["fw"]
            plugin = msgspec.structs.replace(
                plugin, options=msgspec.structs.replace(plugin.options, bind=f"127.0.0.1:{port}")
            )
            with pytest.raises(SourceUnavailable, match=f"cannot listen on 127.0.0.1:{port}"):
                await EdlAdapter("fw", plugin.options).serve()

    async def test_check_reports_listening(self, tmp_path):
        """check() connects to the server and counts the lists."""
        cfg = await self._list(tmp_path)
        async with serving(cfg) as client:
            opts = msgspec.structs.replace(cfg.plugins["fw"].options, bind=f"127.0.0.1:{client.base_url.port}")
            msg = await EdlAdapter("fw", opts).check()
        assert "1 list(s)" in msg


def item(value, typ="domain"):
    from ctd.model import ShareItem

    return ShareItem(
        type=typ,
        value=value,
        severity="unknown",
        reputation=5,
        tags=(),
        comments="",
        reference="",
        first_seen=None,
        last_seen=None,
        expires_at=None,
        sources=("a",),
    )


class TestTimeouts:
    async def _run(self, send):
        """Run one server connection over a memory stream; ``send`` plays the client."""
        client, server = trio.testing.memory_stream_pair()
        settings = ServerSettings(host="127.0.0.1", port=0, lists_dir="/nonexistent", request_timeout=10)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_connection, server, settings, Gate(settings))
            got = await send(client)
        return got

    async def test_idle_connection_closed(self, autojump_clock):
        """A connection that never sends a request is closed after request_timeout."""

        async def idle(client):
            start = trio.current_time()
            assert await client.receive_some() == b""
            return trio.current_time() - start

        assert await self._run(idle) == pytest.approx(10)

    async def test_dribbling_head_closed(self, autojump_clock):
        """A client sending its request head a byte a second (slowloris) is cut off at request_timeout."""

        async def dribble(client):
            start = trio.current_time()
            try:
                for b in b"GET /edl/x.txt HTTP/1.1\r\nX-Slow: " + b"y" * 100:
                    await client.send_all(bytes([b]))
                    await trio.sleep(1)
            except trio.BrokenResourceError:
                pass
            assert await client.receive_some() == b""
            return trio.current_time() - start

        assert await self._run(dribble) <= 11


class TestPure:
    def test_route(self):
        """Only /edl/NAME.txt (or /edl/TOKEN/NAME.txt) names a list; a query string is ignored."""
        assert route(b"/edl/urls.txt?x=1", None) == ("urls", False)
        assert route(b"/edl/t0k/urls.txt", "t0k") == ("urls", False)
        assert route(b"/edl/bad/urls.txt", "t0k") == (None, True)
        assert route(b"/edl/urls.txt", "t0k") == (None, False)
        assert route(b"/edl/%2e%2e.txt", None) == (None, False)

    def test_basic_ok(self):
        """Basic credentials must match both halves; malformed headers fail."""
        good = b"Basic " + base64.b64encode(b"u:p:x")
        assert basic_ok(good, "u", "p:x")
        assert not basic_ok(good, "u", "p")
        assert not basic_ok(b"Basic !!!", "u", "p") and not basic_ok(b"Bearer x", "u", "p")

    def test_not_modified(self):
        """If-None-Match matches the ETag (also weak or *) and wins over If-Modified-Since."""
        t = 1_800_000_000
        assert not_modified({b"if-none-match": b'"x", W/"e"'}, '"e"', t)
        assert not_modified({b"if-none-match": b"*"}, '"e"', t)
        assert not not_modified(
            {b"if-none-match": b'"x"', b"if-modified-since": formatdate(t, usegmt=True).encode()}, '"e"', t
        )
        assert not not_modified({b"if-modified-since": b"garbage"}, '"e"', t)

    def test_parse_bind(self):
        """bind is HOST:PORT or [V6]:PORT."""
        assert parse_bind("127.0.0.1:8080") == ("127.0.0.1", 8080)
        assert parse_bind("[::1]:80") == ("::1", 80)
        for bad in ("8080", "host:", "h:99999"):
            with pytest.raises(ValueError):
                parse_bind(bad)

    def test_config_errors(self, tmp_path):
        """Half-configured auth, a bad token and a bad list name are config errors."""
        for fw in ('username = "u"', 'path_token = "a/b"', 'bind = "nope"'):
            with pytest.raises(ConfigError):
                config(tmp_path, fw=fw)
        with pytest.raises(ConfigError, match="params.name"):
            config(tmp_path, params='{ name = "../x" }')

    def test_rewrite_moves_last_modified(self, tmp_path):
        """Two rewrites within one second still give the second a later Last-Modified second."""
        path = str(tmp_path / "l.txt")
        write_list(path, [item("a.example")])
        first = int(os.stat(path).st_mtime)
        write_list(path, [item("b.example")])
        assert int(os.stat(path).st_mtime) > first


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_daemon_serves_list():
    """The real daemon pulls a file source and serves the matching values as an EDL over HTTP."""
    port = free_port()
    d = DaemonProc(
        short_tmpdir(),
        f"""
[plugins.osint]
adapter = "file"
path = "osint.txt"
sync_interval = "1h"
[plugins.fw]
adapter = "edl"
pull = false
bind = "127.0.0.1:{port}"
username = "fw"
password = "pw"
[rules.domains]
filter = "type = domain"
[sharing.block]
sources = ["osint"]
rule = "domains"
destination = "fw"
action = "list"
params = {{ name = "domains" }}
""",
    )
    (d.dir / "osint.txt").write_text("evil.example\nbad.example\n203.0.113.7\n")
    try:
        d.start().wait_ready()
        with httpx.Client(trust_env=False, auth=("fw", "pw")) as client:

            def served() -> httpx.Response | None:
                r = client.get(f"http://127.0.0.1:{port}/edl/domains.txt")
                return r if r.status_code == 200 and r.text else None

            r = wait_for(served, lambda: f"the list to be served:\n{d.log.read_text()}", timeout=20)
        assert sorted(lines(r)) == ["bad.example", "evil.example"]
        assert d.stop() == 0
    finally:
        d.cleanup()
