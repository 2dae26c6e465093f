"""A small Python app instrumented with the real `sentry-sdk`, for mecha's
end-to-end tests. It captures errors and messages that a Sentry server groups
in known ways, flushes, and prints the ids it sent as one JSON object.

Usage: python_app.py DSN {br,gzip}
"""

import json
import sys
import uuid

import sentry_sdk


def lookup(table, key):
    return table[key]


def divide(a, b):
    return a / b


def parse_config(text):
    return json.loads(text)


def main():
    dsn, compression = sys.argv[1], sys.argv[2]
    sentry_sdk.init(
        dsn=dsn,
        environment="production",
        release="shop@1.4.2",
        server_name="web-1",
        default_integrations=False,
        _experiments={"transport_compression_algo": compression},
    )
    sent = {}

    def keep(name, event_id):
        sent.setdefault(name, []).append(event_id)

    # One issue: the same line of the same function, different keys and users.
    for user, key in [("u1", "apple"), ("u2", "pear"), ("u1", "plum")]:
        sentry_sdk.set_user({"id": user})
        try:
            lookup({}, key)
        except KeyError:
            keep("key_error", sentry_sdk.capture_exception())
    sentry_sdk.set_user(None)

    # Another type from another function: another issue.
    try:
        divide(1, 0)
    except ZeroDivisionError:
        keep("zero_division", sentry_sdk.capture_exception())

    # Library frames (json's decoder, not in-app) under an in-app frame; the
    # values differ, the stack does not: one issue.
    for text in ["{bad", "[1,"]:
        try:
            parse_config(text)
        except ValueError:
            keep("json_error", sentry_sdk.capture_exception())

    # Messages that differ only in numbers and ids: one issue.
    for n in [3, 17, 240]:
        keep(
            "charge_failed",
            sentry_sdk.capture_message(f"charge {n} failed for order {uuid.uuid4()}"),
        )

    # A custom fingerprint merges different errors.
    for exc in [ConnectionError("gateway refused"), TimeoutError("gateway slow")]:
        with sentry_sdk.new_scope() as scope:
            scope.fingerprint = ["payment-gateway"]
            try:
                raise exc
            except OSError:
                keep("gateway", sentry_sdk.capture_exception())

    # `{{ default }}` plus a tenant splits one error into two issues.
    for tenant in ["tenant-a", "tenant-b"]:
        with sentry_sdk.new_scope() as scope:
            scope.fingerprint = ["{{ default }}", tenant]
            try:
                divide(2, 0)
            except ZeroDivisionError:
                keep("tenant_" + tenant[-1], sentry_sdk.capture_exception())

    # Secrets in extra data are scrubbed before they leave the node.
    with sentry_sdk.new_scope() as scope:
        scope.set_extra("db_password", "hunter2")
        scope.set_extra("card", "4111 1111 1111 1111")
        keep("secret", sentry_sdk.capture_message("connecting to the database"))

    sentry_sdk.flush(timeout=10)
    print(json.dumps(sent))


if __name__ == "__main__":
    main()
