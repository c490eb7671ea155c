"""An emulator of the OpenRouter Files API (``orfs emulator``), see docs/EMULATOR.md.

``create_app(EmulatorConfig(...))`` gives the ASGI app (for in-process tests);
``server.run`` serves it with uvicorn.
"""

from orfs.emulator.app import EmulatorConfig, create_app
from orfs.emulator.server import DEMO_API_KEY

__all__ = ["DEMO_API_KEY", "EmulatorConfig", "create_app"]
