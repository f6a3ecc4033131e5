# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Benchmark-only routes. Never installed outside bench/bench_auth.py."""

import json

from odoo import http
from odoo.http import request


class IotBenchFloor(http.Controller):
    @http.route(
        "/iot_bench/floor",
        type="http",
        auth="none",
        methods=["POST"],
        csrf=False,
        save_session=False,
        # same transaction mode as /iot/auth and /iot/acl (auth='none' routes
        # default to a read-only cursor in Odoo 18)
        readonly=False,
    )
    def floor(self, **_params):
        """The floor: Odoo's own cost of an ``auth='none'`` JSON POST.

        Reads and parses the body like ``/iot/auth`` does, touches nothing
        else, answers a constant.
        """
        body = request.httprequest.get_data(cache=False)
        json.loads(body.decode("utf-8"))
        return request.make_json_response({"result": "allow"})
