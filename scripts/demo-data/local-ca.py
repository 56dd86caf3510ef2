#!/usr/bin/python3
"""make demo's stand-in for the CA: issues a one-year code-signing
certificate for a CSR with the committed test PKI (tests/fixtures/pki).
Usage: local-ca.py CSR.pem OUT.cer"""
import datetime
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

PKI = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests",
                   "fixtures", "pki")


def main(csr_path, out_path):
    with open(csr_path, "rb") as f:
        csr = x509.load_pem_x509_csr(f.read())
    with open(os.path.join(PKI, "intermediate.pem"), "rb") as f:
        ca = x509.load_pem_x509_certificate(f.read())
    with open(os.path.join(PKI, "intermediate.key"), "rb") as f:
        ca_key = serialization.load_pem_private_key(f.read(), None)
    t0 = datetime.datetime.utcnow() - datetime.timedelta(minutes=5)
    cert = (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(ca.subject)
            .public_key(csr.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(t0).not_valid_after(t0 + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False,
                                         False, False), True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), False)
            .sign(ca_key, hashes.SHA256()))
    with open(out_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.DER))


if __name__ == "__main__":
    main(*sys.argv[1:3])
