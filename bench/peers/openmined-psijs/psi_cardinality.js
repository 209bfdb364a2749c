#!/usr/bin/env node
// OpenMined PSI (@openmined/psi.js) cardinality protocol on the harness's
// data, as its README shows it: the provider's set is the PSI "server" (its
// setup message holds its blinded set in a Golomb-compressed set), the
// consumer's set the "client" (it learns the intersection size).
//
//   node psi_cardinality.js PROVIDER.csv CONSUMER.csv [--fpr 1e-9] [--ds gcs|bloom|raw]
//
// Both parties run in this one process, one after the other (psi.js is
// single-threaded WebAssembly); every message is serialized and deserialized
// as it would be for the wire, and its size counted. Prints one JSON object:
// wall_s (protocol only: from creating the parties to the intersection size;
// not node start-up, WebAssembly load or file reading), each phase, and the
// bytes each side sends.
'use strict'
const fs = require('fs')
const PSI = require('@openmined/psi.js')

function readEmails(path) {
  const lines = fs.readFileSync(path, 'utf8').split('\n')
  const out = []
  for (let i = 1; i < lines.length; i++) {
    const v = lines[i].trim()
    if (v !== '') out.push(v)
  }
  return out
}

function usage(code) {
  process.stderr.write('Usage: node psi_cardinality.js PROVIDER.csv CONSUMER.csv [--fpr 1e-9] [--ds gcs|bloom|raw]\n')
  process.exit(code)
}

async function main() {
  const args = process.argv.slice(2)
  if (args.includes('--help')) usage(0)
  let fpr = 1e-9
  let ds = 'gcs'
  const files = []
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--fpr' && i + 1 < args.length) fpr = Number(args[++i])
    else if (args[i] === '--ds' && i + 1 < args.length) ds = args[++i]
    else files.push(args[i])
  }
  if (files.length !== 2 || !(fpr > 0 && fpr < 1)) usage(2)

  const serverInputs = readEmails(files[0])
  const clientInputs = readEmails(files[1])
  const psi = await PSI()
  const dsValue = { gcs: psi.dataStructure.GCS, bloom: psi.dataStructure.BloomFilter, raw: psi.dataStructure.Raw }[ds]
  if (dsValue === undefined) usage(2)

  const now = () => Number(process.hrtime.bigint()) / 1e9
  const t0 = now()
  // Server (provider): its key, and the setup message with its blinded set.
  const server = psi.server.createWithNewKey(false)
  const setup = server.createSetupMessage(fpr, clientInputs.length, serverInputs, dsValue)
  const setupBytes = setup.serializeBinary()
  const t1 = now()
  // Client (consumer): blinds its set into a request.
  const client = psi.client.createWithNewKey(false)
  const request = client.createRequest(clientInputs)
  const requestBytes = request.serializeBinary()
  const t2 = now()
  // Server re-blinds the client's elements.
  const response = server.processRequest(psi.request.deserializeBinary(requestBytes))
  const responseBytes = response.serializeBinary()
  const t3 = now()
  // Client unblinds them and looks them up in the server's set.
  const size = client.getIntersectionSize(
    psi.serverSetup.deserializeBinary(setupBytes),
    psi.response.deserializeBinary(responseBytes))
  const t4 = now()
  server.delete()
  client.delete()

  const result = {
    peer: 'openmined-psijs',
    version: require('@openmined/psi.js/package.json').version,
    protocol: 'cardinality',
    data_structure: ds,
    fpr,
    n_server: serverInputs.length,
    n_client: clientInputs.length,
    intersection_size: size,
    wall_s: t4 - t0,
    setup_s: t1 - t0,
    request_s: t2 - t1,
    process_s: t3 - t2,
    intersect_s: t4 - t3,
    bytes_setup: setupBytes.length,
    bytes_request: requestBytes.length,
    bytes_response: responseBytes.length,
    // what each party sends: the client its request, the server its setup
    // message and its response
    bytes_sent_client: requestBytes.length,
    bytes_sent_server: setupBytes.length + responseBytes.length
  }
  process.stdout.write(JSON.stringify(result) + '\n')
}

main().catch((e) => {
  process.stderr.write(`psi_cardinality: ${e && e.stack ? e.stack : e}\n`)
  process.exit(1)
})
