// The usual stack, for bench/run: express, the official twilio package's
// webhook() validation (X-Twilio-Signature), the same envelope the service
// publishes, appended to a file (no fsync). One process, as usually deployed.
//
//   TWILIO_AUTH_TOKEN=… node server.js PORT FILE
"use strict";
const crypto = require("crypto");
const fs = require("fs");
const express = require("express");
const twilio = require("twilio");

const EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>';
const [port, file] = process.argv.slice(2);
const out = fs.createWriteStream(file, { flags: "a" });
const seen = new Set();

const app = express();
app.use(express.urlencoded({ extended: false }));
app.post("/twilio/messaging", twilio.webhook({ protocol: "http" }), (req, res) => {
  const p = req.body;
  const reply = () => res.type("text/xml").send(EMPTY_TWIML);
  if (seen.has(p.MessageSid)) return reply();
  seen.add(p.MessageSid);
  const envelope = {
    id: crypto.randomUUID(),
    source: "twilio",
    channel: "sms",
    provider_message_id: p.MessageSid,
    account_sid: p.AccountSid,
    conversation_sid: null,
    from: p.From,
    to: p.To,
    body: p.Body,
    media: [],
    segments: Number(p.NumSegments || 1),
    received_at: new Date().toISOString(),
    attributes: Object.entries(p),
    metadata: null,
  };
  out.write(JSON.stringify(envelope) + "\n", (error) => (error ? res.status(503).send("not kept") : reply()));
});
app.listen(Number(port), "127.0.0.1");
