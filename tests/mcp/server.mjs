// SPDX-License-Identifier: MIT
// The MCP server the MCP route tests call: the SDK's own Streamable HTTP transport (stateless:
// a server per request), over HTTPS with the tests' certificate, with three tools. Every
// request it receives is one JSON line in the log file (HTTP method, JSON-RPC method, tool
// name, Authorization, SHA-256 of the body as received), so a test can tell what reached it.
//   node server.mjs CONF.json   (CONF: {"cert", "key", "log", "json": false}); prints
//   "listening PORT".
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';

import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { z } from 'zod';

const conf = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));

function mailServer() {
  const s = new McpServer({ name: 'deputy-test-mail', version: '1.0.0' });
  s.registerTool('send_email', { description: 'Sends an email', inputSchema: { to: z.string() } },
    async ({ to }) => ({ content: [{ type: 'text', text: 'sent to ' + to }] }));
  s.registerTool('read_inbox', { description: 'Reads the inbox' },
    async () => ({ content: [{ type: 'text', text: 'inbox: 3 messages' }] }));
  s.registerTool('delete_all', { description: 'Deletes every email' },
    async () => ({ content: [{ type: 'text', text: 'deleted' }] }));
  return s;
}

const srv = https.createServer({ cert: fs.readFileSync(conf.cert), key: fs.readFileSync(conf.key) },
  (req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
      const raw = Buffer.concat(chunks);
      let parsed;
      try { parsed = raw.length ? JSON.parse(raw.toString('utf8')) : undefined; } catch { parsed = undefined; }
      const one = parsed && !Array.isArray(parsed) ? parsed : {};
      fs.appendFileSync(conf.log, JSON.stringify({
        http: req.method, method: one.method ?? null, name: one.params?.name ?? null,
        batch: Array.isArray(parsed), auth: req.headers.authorization ?? null,
        sha256: crypto.createHash('sha256').update(raw).digest('hex'), len: raw.length,
      }) + '\n');
      if (req.method !== 'POST') {
        res.writeHead(405, { Allow: 'POST' }).end();
        return;
      }
      const server = mailServer();
      const transport = new StreamableHTTPServerTransport({
        sessionIdGenerator: undefined, enableJsonResponse: conf.json === true,
      });
      res.on('close', () => { transport.close(); server.close(); });
      try {
        await server.connect(transport);
        await transport.handleRequest(req, res, parsed);
      } catch (e) {
        if (!res.headersSent) res.writeHead(500).end(String(e));
      }
    });
  });
srv.listen(0, '127.0.0.1', () => console.log('listening ' + srv.address().port));
