// The web UI in real headless Chromium, the way an operator uses it: log in, upload an image,
// create a profile, assign it to a MAC, and watch that machine's iPXE script and timeline
// change. Screenshots of every page go to OUT_DIR. Run by crates/bootherd/tests/browser.rs,
// which starts bootherd and passes BASE_URL, PASSWORD and OUT_DIR.

import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";

const base = process.env.BASE_URL;
const password = process.env.PASSWORD;
const out = process.env.OUT_DIR;
const mac = "52:54:00:be:ef:01";
assert.ok(base && password && out, "BASE_URL, PASSWORD and OUT_DIR must be set");
mkdirSync(out, { recursive: true });

const step = (text) => console.log(`step: ${text}`);

// What a booting machine would fetch (no cookie: boot endpoints are public).
async function bootScript() {
  const response = await fetch(`${base}/boot/${mac}.ipxe`);
  assert.equal(response.status, 200);
  return response.text();
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-sync", "--disable-component-update",
  ],
});
const failures = [];
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  page.on("pageerror", (e) => failures.push(`script error on ${page.url()}: ${e.message}`));
  page.on("console", (m) => {
    // 401 (wrong password) and 422 (a refused form) are the answers this test provokes.
    const provoked = /status of (401|422)/.test(m.text());
    if (m.type() === "error" && !provoked) failures.push(`console error on ${page.url()}: ${m.text()}`);
  });
  const shot = (name) => page.screenshot({ path: `${out}/${name}.png`, fullPage: true });

  step("a page behind the login sends us to it");
  await page.goto(`${base}/machines`);
  assert.match(page.url(), /\/login\?next=\/machines$/);
  await page.fill('input[name="password"]', "not the password");
  await page.click('button[type="submit"]');
  await page.getByText("Wrong password.").waitFor();
  await shot("login");
  await page.fill('input[name="password"]', password);
  await page.click('button[type="submit"]');
  await page.waitForURL(`${base}/machines`);

  step("dashboard");
  await page.goto(`${base}/`);
  await page.getByRole("heading", { name: "Listeners" }).waitFor();
  await page.getByText("HTTP", { exact: true }).first().waitFor();
  // The test holds a TFTP transfer half-way while this runs: it shows with a progress bar.
  const transfer = page.locator("tr", { hasText: "undionly.kpxe" });
  await transfer.locator("progress").waitFor();
  assert.match(await transfer.textContent(), /512 B of 64\.0 KiB \(0 %\)/);
  await shot("dashboard");

  step("upload an image with a progress bar");
  await page.goto(`${base}/images`);
  const kernel = Buffer.alloc(3 * 1024 * 1024, 7);
  await page.fill('#upload input[name="image"]', "demo");
  await page.setInputFiles('#upload input[name="file"]', {
    name: "vmlinuz", mimeType: "application/octet-stream", buffer: kernel,
  });
  await page.click('#upload button[type="submit"]');
  await page.getByText("Uploaded vmlinuz into demo.").waitFor();
  await page.waitForLoadState("load");
  await page.locator("#image-demo").getByText("vmlinuz").waitFor();
  await page.locator("#image-demo").getByText("3.0 MiB").first().waitFor();
  await shot("images");

  step("create a profile; a mistake is shown next to the form, then fixed");
  await page.goto(`${base}/profiles/new`);
  await page.fill('input[name="name"]', "demo-linux");
  await page.selectOption("#kind", "linux");
  await page.selectOption('select[name="image"]', "demo");
  await page.fill('input[name="cmdline"]', "console=ttyS0 marker=browser");
  await page.click('button:has-text("Save profile")');
  await page.getByText("kernel is required for a linux profile").waitFor();
  await shot("profile-error");
  await page.fill('input[name="kernel"]', "vmlinuz");
  await page.click('button:has-text("Save profile")');
  await page.getByText("Profile demo-linux saved.").waitFor();
  await shot("profile-form");
  await page.goto(`${base}/profiles/new?kind=local-disk`);
  await page.fill('input[name="name"]', "disk");
  await page.click('button:has-text("Save profile")');
  await page.getByText("Profile disk saved.").waitFor();
  await page.goto(`${base}/profiles`);
  assert.equal(await page.locator("tr", { hasText: "demo-linux" }).getByText("ready").count(), 1);
  await shot("profiles");

  step("the machine boots the menu before it is assigned anything");
  const before = await bootScript();
  assert.match(before, /^choose /m);

  step("add the machine by MAC with the profile");
  await page.goto(`${base}/machines`);
  await page.fill('form[action="/machines"] input[name="mac"]', mac);
  await page.fill('form[action="/machines"] input[name="name"]', "rack1-node1");
  await page.selectOption('form[action="/machines"] select[name="profile"]', "demo-linux");
  await page.click('form[action="/machines"] button[type="submit"]');
  await page.waitForURL(`${base}/machines/${mac}`);
  await page.getByText(`Machine ${mac} added.`).waitFor();
  await page.locator('body[data-live="connected"]').waitFor();
  const assigned = await bootScript();
  assert.match(assigned, /kernel http:\/\/[^ ]+\/images\/demo\/vmlinuz console=ttyS0 marker=browser/);
  assert.doesNotMatch(assigned, /^choose /m);

  step("the timeline updates live (server-sent events) while the page is open");
  await page.getByText("script fetched").first().waitFor();
  await page.getByText("Last boot: in progress").waitFor();
  const kernelFetch = await fetch(`${base}/images/demo/vmlinuz`);
  assert.equal(kernelFetch.status, 200);
  assert.equal((await kernelFetch.arrayBuffer()).byteLength, kernel.length);
  await page.getByText("Last boot: booted").waitFor();
  await page.getByText("demo/vmlinuz over HTTP").first().waitFor();
  await shot("machine");

  step("switch the machine to another profile from the dropdown");
  await page.selectOption('main form[action$="' + mac + '"] select[name="profile"]', "disk");
  await page.click('main form[action$="' + mac + '"] button:has-text("Save")');
  await page.getByText(`Saved ${mac}.`).waitFor();
  const disk = await bootScript();
  assert.match(disk, /exit/);
  assert.doesNotMatch(disk, /marker=browser/);
  await page.goto(`${base}/machines`);
  await page.locator("tr", { hasText: mac }).getByText("rack1-node1").waitFor();
  await shot("machines");

  step("API tokens");
  await page.goto(`${base}/tokens`);
  await page.fill('input[name="name"]', "ci");
  await page.click('button:has-text("Create token")');
  const token = (await page.locator("code.token").textContent()).trim();
  assert.match(token, /^bh_[0-9a-f]{64}$/);
  await shot("tokens");
  const api = await fetch(`${base}/api/v1/machines/${mac}`, {
    headers: { Authorization: `Bearer ${token}` },
  });
  assert.equal(api.status, 200);
  assert.equal((await api.json()).profile, "disk");

  step("log out");
  await page.click('button:has-text("Log out")');
  await page.waitForURL(`${base}/login`);
  await page.goto(`${base}/images`);
  assert.match(page.url(), /\/login/);
} finally {
  await browser.close();
}
assert.deepEqual(failures, [], "the pages logged script errors");
console.log("browser test passed");
