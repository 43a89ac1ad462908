// SPDX-License-Identifier: MIT
// The agent of the MCP route tests: the SDK's own client over Streamable HTTP. It lists the
// tools, calls read_inbox and send_email, and prints one line "RESULT {json}" with what it
// got (or the error each step raised).
//   node agent.mjs URL
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const out = {};
const client = new Client({ name: 'deputy-test-agent', version: '1.0.0' });
async function step(name, fn) {
  try { out[name] = await fn(); } catch (e) { out[name + '_error'] = String(e && e.message || e); }
}
await step('connect', async () => { await client.connect(new StreamableHTTPClientTransport(new URL(process.argv[2]))); return 'ok'; });
await step('tools', async () => (await client.listTools()).tools.map((t) => t.name));
await step('read_inbox', async () => (await client.callTool({ name: 'read_inbox', arguments: {} })).content[0].text);
await step('send_email', async () => JSON.stringify(await client.callTool({ name: 'send_email', arguments: { to: 'bob@example.com' } })));
console.log('RESULT ' + JSON.stringify(out));
await client.close().catch(() => {});
process.exit(0);
