"""Write the MISP samples of the corpus with MISP's own code (run once by hand; not needed by the tests).

One OSINT-style event, built with PyMISP, is written twice:

* ``misp-feed-osint/``: the MISP feed layout, as PyMISP's ``to_feed()`` writes it (what a MISP
  instance publishes as a feed): ``manifest.json`` and ``<uuid>.json``;
* ``stix21-misp-export/bundle.json``: the same event through MISP's STIX 2.1 exporter
  (``misp_stix_converter.MISPtoSTIX21Parser``, the code behind MISP's "STIX 2.1 export").

Usage (in a scratch virtualenv: ``pip install pymisp misp-stix``)::

    python tests/corpus/_tools/make_misp_samples.py
"""

from __future__ import annotations

import json
from pathlib import Path

from misp_stix_converter import MISPtoSTIX21Parser
from pymisp import MISPEvent, MISPObject, MISPOrganisation

CORPUS = Path(__file__).resolve().parent.parent
TS = 1603642920  # 2020-10-25T16:22:00Z, the timestamp MISP's own test data uses
ZIP = ("UEsDBAoACQAAAAaOU1EvUbiwLwAAACMAAAAgABwAODc2NDYwNWM2ZjM4OGM4OTA5NmI1MzRkMzM1NjU4MDJVVAkAAzu1jV87tY1fdXgLAAEEIQ"
       "AAAAQhAAAAUxIrDdj2V8dHuHoKPVDwAeOqqY3shFf5CKvJ/TZg7iNXlXSgxTaWwMnb6fESF/RQSwcIL1G4sC8AAAAjAAAAUEsBAh4DCgAJAAAA"
       "Bo5TUS9RuLAvAAAAIwAAACAAGAAAAAAAAQAAAKSBAAAAADg3NjQ2MDVjNmYzODhjODkwOTZiNTM0ZDMzNTY1ODAyVVQFAAM7tY1fdXgLAAEEIQAA"
       "AAQhAAAAUEsFBgAAAAABAAEAZgAAAJkAAAAAAA==")


def event() -> MISPEvent:
    ev = MISPEvent()
    ev.uuid = "5f9585c8-2e40-4b4d-9a8e-6a4b6c0a1c5e"
    ev.info = "OSINT - Example loader campaign delivering Agent Tesla"
    ev.date = "2020-10-25"
    ev.threat_level_id = 2
    ev.analysis = 2
    ev.distribution = 3
    ev.published = True
    ev.timestamp = TS
    ev.publish_timestamp = TS
    org = MISPOrganisation()
    org.from_dict(name="CIRCL", uuid="55f6ea5e-2c60-40e5-964f-47a8950d210f")
    ev.Orgc = org
    ev.add_tag("tlp:white")
    ev.add_tag('osint:source-type="blog-post"')

    def attr(type_, value, to_ids=True, category="Network activity", comment="", **kw):
        a = ev.add_attribute(type_, value, to_ids=to_ids, category=category, comment=comment, **kw)
        a.timestamp = TS
        return a

    attr("link", "https://blog.example.com/2020/10/agent-tesla-loader/", False, "External analysis")
    attr("text", "The loader arrives as a Word document and fetches the payload over HTTP.", False,
         "External analysis")
    attr("domain", "evil-c2.example.com")
    attr("ip-dst", "203.0.113.45", comment="C2 server")
    attr("url", "http://evil-c2.example.com/gate.php")
    attr("sha256", "ec5aedf5ecc6bdadd4120932170d1b10f6cfa175cfda22951dfd882928ab279b", category="Payload delivery")
    attr("filename|md5", "invoice.doc|b2a5abfeef9e36964281a31e17b57c97", category="Payload delivery")
    sample = attr("malware-sample", "a5ff5f.exe|8764605c6f388c89096b534d33565802", category="Payload delivery",
                  data=ZIP)
    # PyMISP takes this one-member zip for a sample not yet uploaded and keeps only the file name
    # (MISP computes the md5 when it saves the attachment); what a MISP instance publishes, in its
    # feeds and REST answers, is "filename|md5". Put the md5 back, as the saved attribute has it.
    sample.value = "a5ff5f.exe|8764605c6f388c89096b534d33565802"
    attr("domain|ip", "c2.example.net|198.51.100.21")
    attr("ip-dst|port", "198.51.100.33|8443")
    attr("hostname|port", "update.example.org|443")
    attr("email-src", "billing@phish.example.com", category="Payload delivery")
    attr("sha1", "46aba99aa7158e4609aaa72b50990842fd22ae86", False, "Payload delivery",
         "seen on a clean host, not for IDS")
    attr("x509-fingerprint-sha1", "6e6187d58483457f86eae49315a0a72d7543459a")

    f = MISPObject("file", standalone=False)
    f.add_attribute("filename", "AgentTesla_payload.exe")
    f.add_attribute("md5", "93bd5e209b3b048fa37073d7890c44d9", to_ids=True)
    f.add_attribute("sha1", "da79764ed539c57542c523c28c878f6377c258a6", to_ids=True)
    f.add_attribute("sha256", "2e376f05023790d577a4d2e110640410c9d65c145d2d02e207ff07c3271ea095", to_ids=True)
    f.add_attribute("size-in-bytes", 245760, to_ids=False)
    di = MISPObject("domain-ip", standalone=False)
    di.add_attribute("domain", "cdn.evil-c2.example.com", to_ids=True)
    di.add_attribute("ip", "198.51.100.22", to_ids=True)
    ip = MISPObject("ip-port", standalone=False)
    ip.add_attribute("ip", "203.0.113.46", to_ids=True)
    ip.add_attribute("dst-port", "4443", to_ids=False)
    for o in (f, di, ip):
        o.timestamp = TS
        for a in o.attributes:
            a.timestamp = TS
        ev.add_object(o)
    return ev


def main() -> None:
    ev = event()
    feed = CORPUS / "misp-feed-osint"
    feed.mkdir(exist_ok=True)
    doc = ev.to_feed(with_meta=False)
    (feed / f"{ev.uuid}.json").write_text(json.dumps(doc, indent=2) + "\n")
    (feed / "manifest.json").write_text(json.dumps(ev.manifest, indent=2) + "\n")

    parser = MISPtoSTIX21Parser()
    misp = json.loads(ev.to_json())
    for obj in misp.get("Object", []):  # PyMISP leaves an unsaved object's timestamp out
        obj["timestamp"] = str(TS)
    parser.parse_misp_event(misp)
    out = CORPUS / "stix21-misp-export"
    out.mkdir(exist_ok=True)
    bundle = json.loads(parser.bundle.serialize())
    (out / "bundle.json").write_text(json.dumps(bundle, indent=2) + "\n")


if __name__ == "__main__":
    main()
