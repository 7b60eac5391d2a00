"""Twilio's own RequestValidator, driven by the harness (JSON on stdin and stdout).

Input: {"token": ..., "sign": [{"url": ..., "params": [[name, value], ...]}, ...],
        "validate": [{"url": ..., "params": [[name, value], ...], "signature": ...}, ...]}
Output: {"signatures": [...], "valid": [true|false, ...]}
"""
import json
import sys

from twilio.request_validator import RequestValidator

request = json.load(sys.stdin)
validator = RequestValidator(request["token"])
signatures = [validator.compute_signature(case["url"], dict(case["params"])) for case in request["sign"]]
valid = [validator.validate(case["url"], dict(case["params"]), case["signature"]) for case in request["validate"]]
json.dump({"signatures": signatures, "valid": valid}, sys.stdout)
