"""moto's server, with DynamoDB's writes made serializable.

moto runs a transaction (TransactWriteItems) by deep-copying the tables it
touches, applying its items one by one and, when a condition fails, putting
the copies back: a concurrent write that landed in between is lost, or one
that was rolled back comes back. DynamoDB itself never does that, so the
store's concurrency contracts (ten racing first links of one Clerk
organization, racing job admissions) failed now and then on moto alone.
One lock around DynamoDB's writes makes each of them atomic with respect to
the others, as on DynamoDB; reads, SQS long polls and every other service
still run concurrently.

Usage: python moto_server.py -H 127.0.0.1 -p PORT (moto_server's arguments).
"""
import functools
import sys
import threading

from moto.dynamodb.models import DynamoDBBackend
from moto.server import main

_WRITES = threading.RLock()


def _serialized(method):
    @functools.wraps(method)
    def run(*args, **kwargs):
        with _WRITES:
            return method(*args, **kwargs)

    return run


for _name in ("put_item", "update_item", "delete_item", "transact_write_items", "batch_write_item"):
    setattr(DynamoDBBackend, _name, _serialized(getattr(DynamoDBBackend, _name)))

if __name__ == "__main__":
    main(sys.argv[1:])
