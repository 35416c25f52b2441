"""Regenerates the PayPal test certificates in this folder (run once; the
Rust tests only read the files). Needs Python's `cryptography` package.

paypal-signer.key.pem   2048-bit RSA key (PKCS#8) that signs test deliveries
paypal-signer.cert.pem  its self-signed certificate, valid 2020-01-01..2040-01-01
paypal-other.cert.pem   a certificate for another RSA key (wrong signer)
paypal-weak.cert.pem    a 1024-bit RSA certificate (refused: too small)
paypal-ec.cert.pem      a P-256 certificate (refused: not RSA)
"""
import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

NOT_BEFORE = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
NOT_AFTER = datetime.datetime(2040, 1, 1, tzinfo=datetime.timezone.utc)


def certificate(key, common_name):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


signer = rsa.generate_private_key(public_exponent=65537, key_size=2048)
write(
    "paypal-signer.key.pem",
    signer.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ),
)
write("paypal-signer.cert.pem", certificate(signer, "gatehouse paypal test signer"))
other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
write("paypal-other.cert.pem", certificate(other, "gatehouse paypal other signer"))
weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
write("paypal-weak.cert.pem", certificate(weak, "gatehouse paypal weak signer"))
ec_key = ec.generate_private_key(ec.SECP256R1())
write("paypal-ec.cert.pem", certificate(ec_key, "gatehouse paypal ec signer"))
