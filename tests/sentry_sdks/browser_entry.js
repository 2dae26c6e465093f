// Bundled by esbuild into the page that browser_app.mjs serves.
import * as Sentry from "@sentry/browser";
window.Sentry = Sentry;
