"""Checks webhook deliveries with the `standardwebhooks` package from PyPI, an
implementation of the Standard Webhooks specification independent of ours.

Usage: verify.py <deliveries.json>
The file holds a list of {"secret", "headers", "body", "valid"}; each delivery
must verify exactly when "valid" is true. Prints "verified N" and exits 0, or
says which delivery disagreed and exits 1.
"""
import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main() -> int:
    with open(sys.argv[1]) as f:
        deliveries = json.load(f)
    verified = 0
    for i, d in enumerate(deliveries):
        try:
            Webhook(d["secret"]).verify(d["body"], d["headers"])
            ok = True
        except WebhookVerificationError as e:
            ok = False
            why = str(e)
        if ok != d["valid"]:
            print(f"delivery {i} ({d['headers'].get('webhook-id')}): expected valid={d['valid']}, got {ok}"
                  + ("" if ok else f" ({why})"))
            return 1
        verified += ok
    print(f"verified {verified}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
