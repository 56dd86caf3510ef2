// SDK fidelity check: the official Azure SDK for JavaScript against the local
// emulator (tests/servers/azure_emu.py). Fetches a certificate, signs a
// SHA-256 digest through the vault (challenge authentication included) and
// verifies the signature with node:crypto against the certificate's `cer`.
//
// Usage (node >= 20, NODE_EXTRA_CA_CERTS=<emulator tls_ca>):
//   node check.mjs --vault URL --authority URL --tenant T --client-id ID
//                  --secret-file FILE --cert NAME [--cert NAME ...]
// Prints one JSON line {"ok":true,"results":[...]}; exits 1 on any failure.
import { createHash, X509Certificate, verify } from "node:crypto";
import { readFileSync } from "node:fs";
import { ClientSecretCredential } from "@azure/identity";
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
  for (const k of ["vault", "authority", "tenant", "client-id", "secret-file"]) {
    if (!out[k]) throw new Error(`--${k} is required`);
  }
  if (out.cert.length === 0) throw new Error("--cert is required");
  return out;
}

async function checkOne(certClient, credential, name) {
  const cert = await certClient.getCertificate(name);
  if (!cert.keyId || !cert.cer) throw new Error(`${name}: no keyId/cer`);
  const x509 = new X509Certificate(Buffer.from(cert.cer));
  const pub = x509.publicKey;
  const isEc = pub.asymmetricKeyType === "ec";
  const alg = isEc ? "ES256" : "RS256";
  // The vault signs SHA-256(message); node:crypto re-hashes the message.
  const message = Buffer.from(`hsmsign sdk check ${name} ${Date.now()}`);
  const digest = createHash("sha256").update(message).digest();
  const crypto = new CryptographyClient(cert.keyId, credential, {
    disableChallengeResourceVerification: true,
  });
  const res = await crypto.sign(alg, digest);
  const sig = Buffer.from(res.result);
  if (isEc && sig.length !== 64) {
    throw new Error(`${name}: ES256 r||s is ${sig.length} bytes, expected 64`);
  }
  // Key Vault returns ECDSA signatures as IEEE P1363 r||s, RSA as PKCS#1 v1.5.
  const ok = verify("sha256", message,
    isEc ? { key: pub, dsaEncoding: "ieee-p1363" } : pub, sig);
  if (!ok) throw new Error(`${name}: signature does not verify against cer`);
  if (res.keyID !== cert.keyId) throw new Error(`${name}: kid mismatch ${res.keyID}`);
  return { cert: name, alg, kid: cert.keyId, sigBytes: sig.length, verified: true };
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const secret = readFileSync(a["secret-file"], "utf8").trim();
  const credential = new ClientSecretCredential(a.tenant, a["client-id"], secret, {
    authorityHost: a.authority,
    disableInstanceDiscovery: true,
  });
  const certClient = new CertificateClient(a.vault, credential, {
    disableChallengeResourceVerification: true,
  });
  const results = [];
  for (const name of a.cert) results.push(await checkOne(certClient, credential, name));
  console.log(JSON.stringify({ ok: true, results }));
}

main().catch((e) => {
  const msg = (e && (e.message || String(e))) || "unknown error";
  console.log(JSON.stringify({ ok: false, error: msg.split("\n")[0],
                               status: e && e.statusCode, code: e && e.code }));
  process.exit(1);
});
