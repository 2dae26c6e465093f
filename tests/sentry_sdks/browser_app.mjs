// The real `@sentry/browser`, bundled with esbuild, in Debian's headless
// Chromium driven by playwright-core, for mecha's end-to-end tests. The page
// is served from its own origin, so every request to the DSN is cross-origin:
// the SDK's own requests (text/plain, no preflight) and one request with
// `X-Sentry-Auth`, which makes the browser send a CORS preflight.
//
// Usage: node browser_app.mjs DSN
// Prints {"sent": {...}, "preflighted": {"status", "rateLimitsHeaderVisible"}}.

import http from "node:http";
import { fileURLToPath } from "node:url";
import path from "node:path";
import * as esbuild from "esbuild";
import { chromium } from "playwright-core";

const dsn = process.argv[2];
const here = path.dirname(fileURLToPath(import.meta.url));

const bundle = await esbuild.build({
  entryPoints: [path.join(here, "browser_entry.js")],
  bundle: true,
  format: "iife",
  write: false,
  logLevel: "silent",
});
const script = bundle.outputFiles[0].text;

const page = `<!doctype html>
<html><head><meta charset="utf-8"><title>shop</title>
<script src="/sentry.js"></script>
<script>
  window.__sent = {};
  const keep = (name, id) => (window.__sent[name] ??= []).push(id);
  Sentry.init({
    dsn: ${JSON.stringify(dsn)},
    environment: "browser-test",
    release: "web@3.1.0",
    beforeSend(event) {
      if (event.exception?.values?.[0]?.type === "TypeError") keep("uncaught", event.event_id);
      return event;
    },
  });
  function renderBasket(basket) { return basket.lines.map((l) => l.price); }
  // Uncaught: reaches the SDK through window.onerror.
  setTimeout(() => renderBasket(undefined), 0);
</script></head>
<body><p>shop</p></body></html>`;

const server = http.createServer((req, res) => {
  if (req.url === "/sentry.js") {
    res.writeHead(200, { "content-type": "text/javascript" });
    res.end(script);
  } else {
    res.writeHead(200, { "content-type": "text/html" });
    res.end(page);
  }
});
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const origin = `http://127.0.0.1:${server.address().port}`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
try {
  const tab = await browser.newPage();
  const errors = [];
  tab.on("pageerror", (e) => errors.push(String(e)));
  await tab.goto(origin + "/");
  await tab.waitForFunction(() => (window.__sent.uncaught ?? []).length > 0, null, {
    timeout: 15000,
  });
  const result = await tab.evaluate(async (dsn) => {
    window.__sent.message = [Sentry.captureMessage("basket page opened with 3 items")];
    const flushed = await Sentry.flush(10000);
    // A request the browser must preflight: a custom header and a JSON type.
    const url = new URL(dsn);
    const key = url.username;
    const project = url.pathname.replace(/\//g, "");
    const endpoint = `${url.protocol}//${url.host}/api/${project}/envelope/`;
    const id = crypto.randomUUID().replace(/-/g, "");
    const body =
      JSON.stringify({ event_id: id }) + "\n" +
      JSON.stringify({ type: "event" }) + "\n" +
      JSON.stringify({ event_id: id, message: "preflighted request", level: "info" }) + "\n";
    let preflighted;
    try {
      const res = await fetch(endpoint, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          "x-sentry-auth": `Sentry sentry_version=7, sentry_key=${key}, sentry_client=test/1.0`,
        },
        body,
      });
      preflighted = {
        status: res.status,
        body: await res.json(),
        // Readable only when the server exposes it to the page.
        exposed: res.headers.get("x-sentry-rate-limits") !== null || res.headers.get("x-sentry-error") !== null,
      };
    } catch (e) {
      preflighted = { error: String(e) };
    }
    return { sent: window.__sent, flushed, preflighted, id };
  }, dsn);
  result.origin = origin;
  result.pageErrors = errors;
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
  server.close();
}
