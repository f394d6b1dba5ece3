"""Running under systemd: journald logging, sd_notify, log configuration."""
