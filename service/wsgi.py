"""What gunicorn loads (`service.wsgi:app`): the app for the model named by TRANSLATOR_MODEL.

With gunicorn's preload_app this runs once in the master, so workers share the loaded weights.
"""

import os

from service.app import create_app
from service.config import ServiceConfig
from service.logs import configure_logging

configure_logging(os.environ.get("TRANSLATOR_LOG_LEVEL", "INFO"))
app = create_app(ServiceConfig.from_env())
