// Runs the official AWS SDK for JavaScript v3 against tests/servers/aws_emu.py,
// proving that the emulator speaks KMS's JSON protocol and checks SigV4 the
// way AWS does (the SDK signs every request itself).
// Usage: node check.mjs ENDPOINT REGION ACCESS_KEY SECRET KEY_ID DIGEST_B64
// Prints one JSON line: {keySpec, publicKey, signature, notFound, retried}.
import { KMSClient, GetPublicKeyCommand, DescribeKeyCommand, SignCommand } from "@aws-sdk/client-kms";

const [endpoint, region, accessKeyId, secretAccessKey, keyId, digestB64] = process.argv.slice(2);
const client = new KMSClient({
  endpoint, region, credentials: { accessKeyId, secretAccessKey },
  maxAttempts: 4,
});
const b64 = (u8) => Buffer.from(u8).toString("base64");

const pub = await client.send(new GetPublicKeyCommand({ KeyId: keyId }));
const desc = await client.send(new DescribeKeyCommand({ KeyId: keyId }));
const sig = await client.send(new SignCommand({
  KeyId: keyId, Message: Buffer.from(digestB64, "base64"), MessageType: "DIGEST",
  SigningAlgorithm: "RSASSA_PKCS1_V1_5_SHA_256",
}));
let notFound = null;
try {
  await client.send(new GetPublicKeyCommand({ KeyId: "alias/does-not-exist" }));
} catch (e) {
  notFound = { name: e.name, status: e.$metadata?.httpStatusCode, message: e.message };
}
let badSecret = null;
try {
  const bad = new KMSClient({ endpoint, region, maxAttempts: 1,
    credentials: { accessKeyId, secretAccessKey: secretAccessKey + "x" } });
  await bad.send(new DescribeKeyCommand({ KeyId: keyId }));
} catch (e) {
  badSecret = e.name;
}
console.log(JSON.stringify({
  keySpec: pub.KeySpec, keyUsage: pub.KeyUsage, publicKey: b64(pub.PublicKey),
  keyState: desc.KeyMetadata.KeyState, arn: desc.KeyMetadata.Arn,
  signature: b64(sig.Signature), signingAlgorithm: sig.SigningAlgorithm,
  attempts: pub.$metadata.attempts, notFound, badSecret,
}));
