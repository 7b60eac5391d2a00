// The usual stack's egress, for bench/run: the official twilio package's
// messages.create(), COUNT messages at CONCURRENCY at once, against the
// fake Twilio at BASE_URL. Prints one JSON line: how many were created, in
// how long.
//
//   node egress.js BASE_URL COUNT CONCURRENCY
"use strict";
const twilio = require("twilio");

const [baseUrl, count, concurrency] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
const client = twilio(process.env.TWILIO_ACCOUNT_SID, process.env.TWILIO_AUTH_TOKEN);
client.api.baseUrl = baseUrl;

async function worker(next, done) {
  for (let i = next(); i < count; i = next()) {
    await client.messages.create({ to: "+14155550100", from: `+1500555${String(i % 10000).padStart(4, "0")}`, body: `bench ${i}` });
    done();
  }
}

async function main() {
  let issued = 0;
  let created = 0;
  const started = process.hrtime.bigint();
  await Promise.all(Array.from({ length: concurrency }, () => worker(() => issued++, () => created++)));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  console.log(JSON.stringify({ created, seconds }));
}

main().catch((error) => {
  console.error(error.message);
  process.exit(1);
});
