'use strict'
// A small program instrumented with the published Node.js agent
// (elastic-apm-node). Configured from the environment by tests/agents.rs:
//   APM_URL, SERVICE_NAME, and SECRET_TOKEN or API_KEY (optional).
// Produces two transactions with spans, a captured error, labels and a custom
// metric, then flushes. Every warning or error the agent logs is printed as
// `AGENT-PROBLEM ...` and makes the exit status 1.

const problems = []
function collector (level) {
  return function (...args) {
    const parts = args.map((a) => (a instanceof Error ? a.stack : typeof a === 'object' ? JSON.stringify(a) : String(a)))
    const msg = `AGENT-PROBLEM ${level}: ${parts.join(' ')}`
    problems.push(msg)
    process.stderr.write(msg + '\n')
  }
}
function quiet () {}
const logger = {
  fatal: collector('fatal'),
  error: collector('error'),
  warn: collector('warn'),
  info: quiet,
  debug: quiet,
  trace: quiet
}

const opts = {
  serviceName: process.env.SERVICE_NAME,
  serverUrl: process.env.APM_URL,
  environment: 'test',
  cloudProvider: 'none',
  centralConfig: true,
  metricsInterval: '1s',
  logger
}
if (process.env.SECRET_TOKEN) opts.secretToken = process.env.SECRET_TOKEN
if (process.env.API_KEY) opts.apiKey = process.env.API_KEY

const apm = require('elastic-apm-node').start(opts)

// A custom metric: a gauge read at each metrics collection.
apm.registerMetric('apmrs_test.queue_depth', () => 42)

// The event loop can empty while a flush waits forever (e.g. after a rejected
// request): ending without reaching the end of main() is a failure too.
let finished = false
process.on('exit', (code) => {
  if (!finished && code === 0) {
    process.stderr.write(`AGENT-FAILED exited before the end of the program (${problems.length} problem(s))\n`)
    process.exitCode = 1
  }
})

function sleep (ms) { return new Promise((resolve) => setTimeout(resolve, ms)) }

async function main () {
  for (let i = 0; i < 2; i++) {
    const tx = apm.startTransaction('GET /hello', 'request')
    tx.setLabel('run', 'agents-test')
    tx.setLabel('iteration', i)
    const db = apm.startSpan('SELECT FROM orders', 'db', 'postgresql', 'query')
    await sleep(10)
    db.end()
    const work = apm.startSpan('compute', 'app')
    await sleep(5)
    work.end()
    if (i === 1) apm.captureError(new Error('agents-test boom'))
    tx.result = 'HTTP 2xx'
    tx.end()
  }
  await sleep(2000) // at least one metrics collection (metricsInterval 1s)
  await new Promise((resolve) => apm.flush(resolve))
  await apm.destroy()
  if (problems.length > 0) {
    process.stderr.write(`AGENT-FAILED ${problems.length} problem(s)\n`)
    process.exit(1)
  }
  finished = true
  process.stdout.write('AGENT-OK\n')
  process.exit(0)
}

main().catch((err) => {
  process.stderr.write(`AGENT-FAILED ${err.stack}\n`)
  process.exit(1)
})
