// Runs the official Google Cloud KMS client for Node.js against
// tests/servers/gcp_emu.py over its HTTP/JSON REST transport (fallback: true;
// the default gRPC transport is not emulated), proving the emulator's
// resource paths, JSON field names (int64 CRC32C values as strings) and
// error shapes. Usage: node check.mjs HOST PORT TOKEN KEY_NAME DIGEST_B64
import { KeyManagementServiceClient } from "@google-cloud/kms";
import { OAuth2Client } from "google-auth-library";

const [host, port, token, keyName, digestB64] = process.argv.slice(2);
const authClient = new OAuth2Client();
authClient.setCredentials({ access_token: token, expiry_date: Date.now() + 3600e3 });
const client = new KeyManagementServiceClient({
  fallback: true, apiEndpoint: host, port: Number(port), protocol: "http", authClient,
});

const [versions] = await client.listCryptoKeyVersions({ parent: keyName, filter: "state=ENABLED" });
const name = versions[versions.length - 1].name;
const [pub] = await client.getPublicKey({ name });
const [sig] = await client.asymmetricSign({
  name, digest: { sha256: Buffer.from(digestB64, "base64") },
  digestCrc32c: { value: Number(process.env.DIGEST_CRC) },
});
let notFound = null;
try {
  await client.getPublicKey({ name: keyName + "/cryptoKeyVersions/99" });
} catch (e) {
  notFound = { code: e.code, message: e.message };
}
console.log(JSON.stringify({
  versions: versions.map((v) => [v.name, v.state]), name, algorithm: pub.algorithm,
  pem: pub.pem, pemCrc32c: String(pub.pemCrc32c?.value ?? pub.pemCrc32c),
  signature: Buffer.from(sig.signature).toString("base64"),
  signatureCrc32c: String(sig.signatureCrc32c?.value ?? sig.signatureCrc32c),
  verifiedDigestCrc32c: sig.verifiedDigestCrc32c, notFound,
}));
