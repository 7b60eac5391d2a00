// Twilio's own Node library (the `twilio` npm package, 6.3+), driven by the
// harness (JSON on stdin and stdout): it signs webhooks exactly as Twilio does,
// with the Auth Token (HMAC_SHA1) or a shared key (HMAC_SHA256).
//
// Input: {"sign": [{"secret": ..., "url": ..., "algorithm": "HMAC_SHA1"|"HMAC_SHA256",
//                   "params": [[name, value], ...]} or {..., "body": "<raw JSON>"}]}
//   A case with `body` is a JSON webhook: its URL gains bodySHA256 (Twilio's
//   getExpectedBodyHash) and the signature covers the URL alone.
// Output: {"signed": [{"url": ..., "signature": ...}, ...],
//          "algorithms": [getSignatureAlgorithm(header), ...]} for "headers": [...]
"use strict";

const webhooks = require("twilio/lib/webhooks/webhooks");

function paramsObject(pairs) {
  const params = {};
  for (const [name, value] of pairs) {
    if (name in params) {
      params[name] = [].concat(params[name], value);
    } else {
      params[name] = value;
    }
  }
  return params;
}

function signOne(testCase) {
  let url = testCase.url;
  let params = paramsObject(testCase.params || []);
  if (typeof testCase.body === "string") {
    url += (url.includes("?") ? "&" : "?") + "bodySHA256=" + webhooks.getExpectedBodyHash(testCase.body);
    params = {};
  }
  const signature = webhooks.getExpectedTwilioSignature(testCase.secret, url, params, testCase.algorithm);
  return { url, signature };
}

let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const request = JSON.parse(input);
  const answer = {
    signed: (request.sign || []).map(signOne),
    algorithms: (request.headers || []).map((header) => webhooks.getSignatureAlgorithm(header)),
  };
  process.stdout.write(JSON.stringify(answer));
});
