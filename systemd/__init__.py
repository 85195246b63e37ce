"""The systemd user unit template (``csm.service``), shipped as package data; read by ``csm.client.units``."""
