# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
{
    "name": "IoT Bench Floor",
    "summary": "Benchmark only: a constant JSON route (bench/bench_auth.py's floor)",
    "version": "18.0.1.0.0",
    "category": "Hidden",
    "author": "iot_base developers",
    "license": "LGPL-3",
    "depends": ["base"],
    "data": [],
    "installable": True,
}
