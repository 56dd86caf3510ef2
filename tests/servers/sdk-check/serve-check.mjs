// SDK compatibility check for `hsmsign serve`: the official Azure SDK for
// JavaScript (@azure/keyvault-certificates, @azure/keyvault-keys) used against
// the self-hosted signing service exactly as against Key Vault. Fetches each
// certificate, signs a SHA-256 (or SHA-384) digest with CryptographyClient
// (challenge authentication included: the first request goes without a
// token) and verifies the signature with node:crypto against `cer`.
//
// The bearer token (an OIDC JWT or an API token) comes from a file through a
// minimal TokenCredential, as a CI job's token would.
//
// Usage (node >= 20, NODE_EXTRA_CA_CERTS=<the server's CA>):
//   node serve-check.mjs --vault URL --token-file FILE --cert NAME [--cert NAME ...]
// Prints one JSON line {"ok":true,"results":[...]} (with the scopes the SDK
// asked the credential for); exits 1 on any failure, printing
// {"ok":false,"error","status","code"}.
import { createHash, X509Certificate, verify } from "node:crypto";
import { readFileSync } from "node:fs";
import { CertificateClient } from "@azure/keyvault-certificates";
import { CryptographyClient } from "@azure/keyvault-keys";

function parseArgs(argv) {
  const out = { cert: [] };
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i].replace(/^--/, "");
    const v = argv[i + 1];
    if (v === undefined) throw new Error(`missing value for ${argv[i]}`);
    if (k === "cert") out.cert.push(v);
    else out[k] = v;
  }
  for (const k of ["vault", "token-file"]) {
    if (!out[k]) throw new Error(`--${k} is required`);
  }
  if (out.cert.length === 0) throw new Error("--cert is required");
  return out;
}

// A TokenCredential that hands out the CI job's token for any scope.
function fileCredential(path, scopesSeen) {
  return {
    async getToken(scopes) {
      scopesSeen.push(...(Array.isArray(scopes) ? scopes : [scopes]));
      return { token: readFileSync(path, "utf8").trim(),
               expiresOnTimestamp: Date.now() + 5 * 60 * 1000 };
    },
  };
}

async function checkOne(certClient, credential, name) {
  const cert = await certClient.getCertificate(name);
  if (!cert.keyId || !cert.cer) throw new Error(`${name}: no keyId/cer`);
  const pub = new X509Certificate(Buffer.from(cert.cer)).publicKey;
  const isEc = pub.asymmetricKeyType === "ec";
  const p384 = isEc && pub.asymmetricKeyDetails.namedCurve === "secp384r1";
  const alg = isEc ? (p384 ? "ES384" : "ES256") : "RS256";
  const hash = p384 ? "sha384" : "sha256";
  const message = Buffer.from(`hsmsign serve sdk check ${name} ${Date.now()}`);
  const digest = createHash(hash).update(message).digest();
  const crypto = new CryptographyClient(cert.keyId, credential, {
    disableChallengeResourceVerification: true,
  });
  const res = await crypto.sign(alg, digest);
  const sig = Buffer.from(res.result);
  const ok = verify(hash, message,
    isEc ? { key: pub, dsaEncoding: "ieee-p1363" } : pub, sig);
  if (!ok) throw new Error(`${name}: signature does not verify against cer`);
  if (res.keyID !== cert.keyId) throw new Error(`${name}: kid mismatch ${res.keyID}`);
  return { cert: name, alg, kid: cert.keyId, sigBytes: sig.length, verified: true };
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const scopes = [];
  const credential = fileCredential(a["token-file"], scopes);
  const certClient = new CertificateClient(a.vault, credential, {
    disableChallengeResourceVerification: true,
  });
  const results = [];
  for (const name of a.cert) results.push(await checkOne(certClient, credential, name));
  console.log(JSON.stringify({ ok: true, results, scopes: [...new Set(scopes)] }));
}

main().catch((e) => {
  const msg = (e && (e.message || String(e))) || "unknown error";
  console.log(JSON.stringify({ ok: false, error: msg.split("\n")[0],
                               status: e && e.statusCode, code: e && e.code }));
  process.exit(1);
});
