PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
CONFIG ?= etc/ctd.toml

.PHONY: run test lint bench clean venv install install-venv install-data

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

## make run: venv, install, run the daemon in the foreground on the demo config (state under ./var/)
run: venv
	mkdir -p var
	$(VENV)/bin/ctd run --config $(CONFIG)

## make test: venv, install with test extras, then lint, type-check and run the whole suite
test: lint
	$(PY) -m pytest -q

## make lint: ruff (lint and format check) and mypy, as configured in pyproject.toml
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

## make bench: the ingest benchmark (N=1,000,000 by default)
bench: venv
	$(PY) bench/ingest.py --n $${N:-1000000}

clean:
	rm -rf $(VENV) var build *.egg-info

# --- make install: the daemon as a systemd service (see "Install as a service" in docs/operations.md) ----
# A venv at $(PREFIX) with ctd installed into it (not editable), the unit, the
# sysusers.d/tmpfiles.d snippets, and /etc/ctd/ctd.toml if there is none yet.
# DESTDIR stages the tree for packaging: the venv is built at $(DESTDIR)$(PREFIX)
# and its bin/ scripts are then rewritten to run from $(PREFIX).
PREFIX      ?= /opt/ctd
DESTDIR     ?=
SYSCONFDIR  ?= /etc
UNITDIR     ?= /etc/systemd/system
SYSUSERSDIR ?= /usr/lib/sysusers.d
TMPFILESDIR ?= /usr/lib/tmpfiles.d
DOCDIR      ?= $(PREFIX)/share/doc/ctd
STAGE       := $(DESTDIR)$(PREFIX)
CONFFILE    := $(SYSCONFDIR)/ctd/ctd.toml
UNIT_SED    := -e 's|/opt/ctd/|$(PREFIX)/|g' -e 's|/etc/ctd/|$(SYSCONFDIR)/ctd/|g'

## make install [PREFIX=/opt/ctd] [DESTDIR=] [SYSCONFDIR=/etc] [UNITDIR=/etc/systemd/system]: install the service
install: install-venv install-data
	@echo
	@echo "ctd is installed in $(PREFIX). Next steps (as root):"
	@echo "  systemd-sysusers ctd.conf                # user and group ctd"
	@echo "  systemd-tmpfiles --create ctd.conf       # /var/lib/ctd/feeds, $(CONFFILE) 0640 root:ctd"
	@echo "  $(PREFIX)/bin/ctd check-config $(CONFFILE)"
	@echo "  systemctl daemon-reload"
	@echo "  systemctl enable --now ctd"
	@echo "  journalctl -u ctd -f"
	@echo "  usermod -aG ctd alice                    # let alice use ctdctl's read commands"
	@echo "Then, as root or a member of group ctd:"
	@echo "  $(PREFIX)/bin/ctdctl --config $(CONFFILE) status"

## make install-venv: only the venv at $(DESTDIR)$(PREFIX) with ctd installed (not editable)
install-venv:
	@case "$(PREFIX)" in /*) ;; *) echo "make install: PREFIX must be an absolute path" >&2; exit 2;; esac
	$(PYTHON) -m venv $(STAGE)
	rm -rf build  # setuptools would pack stale modules left in build/lib into the wheel
	$(STAGE)/bin/python -m pip install -q --no-warn-script-location .
	@if [ -n "$(DESTDIR)" ]; then \
	  echo "rewriting $(STAGE) -> $(PREFIX) in $(STAGE)/bin and pyvenv.cfg"; \
	  grep -rlIF -- '$(STAGE)' $(STAGE)/bin $(STAGE)/pyvenv.cfg | xargs -r sed -i 's|$(STAGE)|$(PREFIX)|g'; \
	fi
	@real=$$(readlink -f $(STAGE)/bin/python); case "$$real" in /home/*|/root/*) \
	  echo "WARNING: the venv's interpreter $$real is under /home or /root, which the unit's" >&2; \
	  echo "         ProtectHome=yes hides: reinstall with PYTHON=/usr/bin/python3 (3.11+)." >&2;; esac

## make install-data: only the unit, sysusers/tmpfiles snippets, docs, and the config if absent
install-data:
	@case "$(PREFIX)" in /*) ;; *) echo "make install: PREFIX must be an absolute path" >&2; exit 2;; esac
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR) $(DESTDIR)$(DOCDIR)
	sed $(UNIT_SED) systemd/ctd.service > $(DESTDIR)$(UNITDIR)/ctd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/ctd.service
	install -m 0644 systemd/ctd.sysusers $(DESTDIR)$(SYSUSERSDIR)/ctd.conf
	sed $(UNIT_SED) systemd/ctd.tmpfiles > $(DESTDIR)$(TMPFILESDIR)/ctd.conf
	chmod 0644 $(DESTDIR)$(TMPFILESDIR)/ctd.conf
	install -m 0644 README.md SECURITY.md $(DESTDIR)$(DOCDIR)/
	install -d $(DESTDIR)$(DOCDIR)/docs/adapters
	install -m 0644 docs/*.md $(DESTDIR)$(DOCDIR)/docs/
	install -m 0644 docs/adapters/*.md $(DESTDIR)$(DOCDIR)/docs/adapters/
	install -m 0644 etc/ctd-system.toml $(DESTDIR)$(DOCDIR)/ctd.toml.example
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/ctd
	@if [ -e $(DESTDIR)$(CONFFILE) ]; then \
	  echo "kept the existing $(DESTDIR)$(CONFFILE) (the new example is $(DOCDIR)/ctd.toml.example)"; \
	else \
	  echo "install -m 0640 etc/ctd-system.toml $(DESTDIR)$(CONFFILE)"; \
	  install -m 0640 etc/ctd-system.toml $(DESTDIR)$(CONFFILE); \
	fi
