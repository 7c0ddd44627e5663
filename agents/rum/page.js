// Instruments the page with the published RUM agent (@elastic/apm-rum).
// Settings come from the query string set by run.js: server, service, api.
/* global elasticApm */
(function () {
  const q = new URLSearchParams(window.location.search)
  const apm = elasticApm.init({
    serviceName: q.get('service'),
    serviceVersion: '1.0.0',
    environment: 'test',
    serverUrl: q.get('server'),
    apiVersion: Number(q.get('api')),
    centralConfig: true,
    breakdownMetrics: true,
    flushInterval: 200,
    logLevel: 'warn'
  })
  apm.addLabels({ run: 'agents-test', api_version: q.get('api') })

  function sleep (ms) { return new Promise((resolve) => setTimeout(resolve, ms)) }

  async function work () {
    // a custom transaction with two spans (the page-load transaction is automatic)
    const tr = apm.startTransaction('checkout', 'custom', { managed: true })
    const s1 = tr.startSpan('compute basket', 'app')
    await sleep(20)
    s1.end()
    const s2 = tr.startSpan('render', 'app')
    await sleep(10)
    s2.end()
    tr.end()
    apm.captureError(new Error('agents-test boom'))
    window.__apmrsDone = true
  }

  window.addEventListener('load', () => { setTimeout(work, 300) })
})()
