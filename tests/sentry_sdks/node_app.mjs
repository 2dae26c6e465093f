// A small Node.js app instrumented with the real `@sentry/node`, for mecha's
// end-to-end tests. JavaScript SDKs authenticate with the `sentry_key` query
// string. It captures errors and an unhandled promise rejection, flushes, and
// prints the ids it sent as one JSON object.
//
// Usage: node node_app.mjs DSN

import * as Sentry from "@sentry/node";

const dsn = process.argv[2];
const sent = {};
const keep = (name, id) => (sent[name] ??= []).push(id);

Sentry.init({
  dsn,
  environment: "staging",
  release: "checkout@2.0.0",
  tracesSampleRate: 0,
  beforeSend(event) {
    // Unhandled rejections are captured by the SDK itself; note their ids.
    if (event.exception?.values?.[0]?.mechanism?.type === "auto.node.onunhandledrejection") {
      keep("rejection", event.event_id);
    }
    return event;
  },
});

function readCart(cart) {
  return cart.items.length;
}

function checkQuantity(n) {
  if (n > 10) throw new RangeError(`quantity ${n} over the limit`);
}

// One issue: the same TypeError site, different messages.
for (const cart of [undefined, null]) {
  try {
    readCart(cart);
  } catch (e) {
    keep("type_error", Sentry.captureException(e));
  }
}

// Another issue.
try {
  checkQuantity(99);
} catch (e) {
  keep("range_error", Sentry.captureException(e));
}

// An unhandled rejection, captured by the SDK's integration.
Promise.reject(new Error("payment provider timed out"));
await new Promise((resolve) => setTimeout(resolve, 200));

await Sentry.flush(10000);
console.log(JSON.stringify(sent));
