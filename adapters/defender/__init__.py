"""Microsoft Defender for Endpoint: pull alert evidence and custom indicators; push and withdraw custom indicators."""
