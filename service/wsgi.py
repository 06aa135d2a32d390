"""What gunicorn loads (`service.wsgi:app`): the app for the model named by TRANSLATOR_MODEL.

With gunicorn's preload_app this runs once in the master, so workers share the loaded weights.
"""

import os
import sys

from service.app import create_app
from service.config import ServiceConfig
from service.logs import configure_logging

configure_logging(os.environ.get("TRANSLATOR_LOG_LEVEL", "INFO"))
try:
    config = ServiceConfig.from_env()
except ValueError as err:  # a bad TRANSLATOR_* setting: one line, not an import traceback from gunicorn
    print(f"translator serve: error: {err}", file=sys.stderr)
    sys.exit(2)
app = create_app(config)
