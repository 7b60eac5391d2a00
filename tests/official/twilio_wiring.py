"""The same webhook changes `twilio wire` makes, made by twilio-python.

Reads one JSON object on stdin (base_url, account_sid, api_key, api_secret,
number_sid, service_sid, chat_service_sid, public_url, filters) and makes,
against base_url instead of twilio.com: the incoming number's SMS update, the
Messaging Service's update and the Conversations webhook update, each after
reading what it updates, as Twilio's own library forms them.
"""

import json
import sys
from urllib.parse import urlsplit, urlunsplit

from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client


class ToFake(TwilioHttpClient):
    """Sends every request to the fake, keeping its path and query."""

    def __init__(self, base_url):
        super().__init__()
        self.base = urlsplit(base_url)

    def request(self, method, url, *args, **kwargs):
        parts = urlsplit(url)
        url = urlunsplit((self.base.scheme, self.base.netloc, parts.path, parts.query, ""))
        return super().request(method, url, *args, **kwargs)


def main():
    job = json.load(sys.stdin)
    client = Client(
        job["api_key"], job["api_secret"], job["account_sid"], http_client=ToFake(job["base_url"])
    )
    base = job["public_url"]
    list(client.incoming_phone_numbers.list())
    client.incoming_phone_numbers(job["number_sid"]).update(sms_url=f"{base}/twilio/messaging")
    client.messaging.v1.services(job["service_sid"]).fetch()
    client.messaging.v1.services(job["service_sid"]).update(
        inbound_request_url=f"{base}/twilio/messaging", status_callback=f"{base}/twilio/status"
    )
    webhooks = client.conversations.v1.services(job["chat_service_sid"]).configuration.webhooks()
    webhooks.fetch()
    webhooks.update(post_webhook_url=f"{base}/twilio/conversations", method="POST", filters=job["filters"])


if __name__ == "__main__":
    main()
