"""The launchd agent template (``<label>.plist``), shipped as package data; read by ``csm.client.units``."""
