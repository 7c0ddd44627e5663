'use strict'
// Runs the published RUM agent (@elastic/apm-rum) in headless Chromium,
// driven by playwright-core with the system browser. The page is served by a
// small static server on http://localhost:<port>, a different origin from
// apm-rs (APM_URL, normally http://127.0.0.1:<port>), so CORS is real.
//
// Environment (set by tests/agents.rs): APM_URL, SERVICE_NAME, API_VERSION
// (2 or 3), RUM_BUNDLE (path of elastic-apm-rum.umd.min.js), CHROMIUM
// (default /usr/bin/chromium). Every console warning or error, page error,
// failed request or non-2xx answer from apm-rs is printed as
// `AGENT-PROBLEM ...` and makes the exit status 1.

const http = require('http')
const fs = require('fs')
const path = require('path')
const { chromium } = require('playwright-core')

const apmUrl = process.env.APM_URL
const problems = []
function problem (msg) {
  problems.push(msg)
  process.stderr.write(`AGENT-PROBLEM ${msg}\n`)
}

const files = {
  '/': ['text/html', path.join(__dirname, 'page.html')],
  '/page.js': ['application/javascript', path.join(__dirname, 'page.js')],
  '/apm-rum.js': ['application/javascript', process.env.RUM_BUNDLE]
}

function serve () {
  const server = http.createServer((req, res) => {
    const f = files[new URL(req.url, 'http://x').pathname]
    if (!f) { res.writeHead(404); res.end(); return }
    res.writeHead(200, { 'content-type': f[0] })
    fs.createReadStream(f[1]).pipe(res)
  })
  return new Promise((resolve) => server.listen(0, 'localhost', () => resolve(server)))
}

// Ending without reaching the end of main() is a failure too.
let finished = false
process.on('exit', (code) => {
  if (!finished && code === 0) {
    process.stderr.write(`AGENT-FAILED exited before the end of the program (${problems.length} problem(s))\n`)
    process.exitCode = 1
  }
})

async function main () {
  const server = await serve()
  const origin = `http://localhost:${server.address().port}`
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-dev-shm-usage']
  })
  const page = await browser.newPage()
  let inflight = 0
  let intakeOk = 0
  let intakeSent = 0
  let configOk = 0
  const isApm = (u) => u.startsWith(apmUrl)
  page.on('console', (m) => {
    if (m.type() === 'warning' || m.type() === 'error') problem(`console.${m.type()}: ${m.text()}`)
  })
  page.on('pageerror', (e) => problem(`page error: ${e}`))
  page.on('request', (r) => {
    if (!isApm(r.url())) return
    inflight++
    if (r.method() === 'POST') intakeSent++
  })
  page.on('requestfailed', (r) => {
    if (isApm(r.url())) inflight--
    problem(`request failed: ${r.method()} ${r.url()}: ${r.failure() && r.failure().errorText}`)
  })
  page.on('requestfinished', async (r) => {
    if (!isApm(r.url())) return
    const resp = await r.response()
    const status = resp ? resp.status() : 0
    const line = `${r.method()} ${new URL(r.url()).pathname} -> ${status}`
    process.stdout.write(`apm-rs: ${line}\n`)
    if (r.method() !== 'OPTIONS' && (status < 200 || status > 299) && status !== 304) problem(`non-2xx answer: ${line}`)
    if (r.method() === 'POST' && status === 202) intakeOk++
    if (r.method() === 'GET' && (status === 200 || status === 304)) configOk++
    inflight--
  })

  const q = new URLSearchParams({ server: apmUrl, service: process.env.SERVICE_NAME, api: process.env.API_VERSION })
  await page.goto(`${origin}/?${q}`)
  await page.waitForFunction(() => window.__apmrsDone === true, null, { timeout: 15000 })
  // let the agent send its queue (flushInterval 200 ms), then wait for quiet
  const deadline = Date.now() + 15000
  let quietSince = 0
  while (Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100))
    if (inflight === 0 && intakeSent > 0) {
      if (!quietSince) quietSince = Date.now()
      if (Date.now() - quietSince >= 1500) break
    } else {
      quietSince = 0
    }
  }
  await browser.close()
  server.close()
  process.stdout.write(`intake posts accepted: ${intakeOk}, config answers: ${configOk}\n`)
  if (intakeOk === 0) problem('no intake request was accepted')
  if (problems.length > 0) {
    process.stderr.write(`AGENT-FAILED ${problems.length} problem(s)\n`)
    process.exit(1)
  }
  finished = true
  process.stdout.write('AGENT-OK\n')
}

main().catch((err) => {
  process.stderr.write(`AGENT-FAILED ${err.stack}\n`)
  process.exit(1)
})
