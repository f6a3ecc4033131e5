# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
import logging
import signal
import sys

from odoo.cli import Command
from odoo.exceptions import UserError
from odoo.tools import config

from .listener import Listener

_logger = logging.getLogger(__name__)


class IotListen(Command):
    """Hear device status and telemetry over MQTT (iot_base): iot-listen -d DB"""

    name = "iot-listen"

    def run(self, args):
        config.parse_config(args, setup_logging=True)
        dbname = config["db_name"]
        if not dbname or "," in dbname:
            sys.exit("iot-listen: one database is needed (-d DB)")
        listener = Listener(dbname)

        def stop(_signum, _frame):
            listener.stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        try:
            listener.run()
        except UserError as exc:
            _logger.error("iot-listen does not start: %s", exc.args[0])
            sys.exit(1)
