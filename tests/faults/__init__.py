"""The fault-injection suite: the real daemon as a subprocess, under full disks, damaged files, kills and
misbehaving peers (issue 11). ``helpers`` holds what the tests share."""
