// The npm packages of package.json, for check scripts outside this directory
// (tests/scaleout/): a bare import resolves from the importing file's folder.
export { EventSource } from "eventsource";
export { chromium } from "playwright-core";
