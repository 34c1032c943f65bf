"""Verifies webhook deliveries with the Standard Webhooks reference library.

Usage: verify_standard_webhooks.py SECRET DELIVERIES.json
DELIVERIES.json is a list of {"headers": {...}, "body": "..."}. Exits 0 when every
delivery verifies with SECRET and none verifies with a different secret.
"""

import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main() -> int:
    secret, path = sys.argv[1], sys.argv[2]
    with open(path, encoding="utf-8") as f:
        deliveries = json.load(f)
    good, wrong = Webhook(secret), Webhook("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")
    for d in deliveries:
        good.verify(d["body"], d["headers"])
        try:
            wrong.verify(d["body"], d["headers"])
        except WebhookVerificationError:
            pass
        else:
            print("a delivery verified with the wrong secret", file=sys.stderr)
            return 1
    print(f"{len(deliveries)} deliveries verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
