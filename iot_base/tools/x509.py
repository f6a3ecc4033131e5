# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Device certificates: a company's certificate authority, device
certificates from CSRs, PKCS#12 bundles and CRLs (no Odoo import).

Built on the ``cryptography`` package Odoo 18.0 already requires (its pinned
3.4.8 and later). Every input that comes from a device (a CSR, a hardware id)
is bounded and checked before it is used; what is refused raises
:class:`X509Error` with a message that is safe to show the caller (it never
repeats key material).
"""

import datetime
import hashlib
import unicodedata
from urllib.parse import quote

from cryptography import x509
from cryptography.exceptions import (
    InternalError,
    InvalidSignature,
    UnsupportedAlgorithm,
)
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# a CSR is a few hundred bytes; anything much larger is not a device's
MAX_CSR_BYTES = 16384
MAX_NAME_LENGTH = 128
RSA_MIN_BITS = 2048
RSA_MAX_BITS = 4096
CURVES = {"secp256r1": ec.SECP256R1, "secp384r1": ec.SECP384R1}
KEY_TYPES = ("ec", "rsa")
HARDWARE_URN = "urn:iot-base:hardware-id:"


class X509Error(ValueError):
    """A certificate input was refused; the message is safe to show."""


def _now():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def _check_name(value, label):
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_LENGTH:
        raise X509Error(f"{label} must be a text of 1 to {MAX_NAME_LENGTH} characters")
    if any(
        unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn") for char in value
    ):
        raise X509Error(f"{label} must not contain control or invisible characters")
    return value


def new_private_key(key_type="ec"):
    """A new private key: EC P-256 (default) or RSA 2048."""
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise X509Error(f"key type must be one of {', '.join(KEY_TYPES)}")


def private_key_pem(key):
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key(pem):
    return serialization.load_pem_private_key(pem, password=None)


def certificate_pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def new_ca(common_name, key_type="ec", days=3650, organization=None):
    """A self-signed CA for device certificates: (private key, certificate).

    ``pathlen=0``: it signs device certificates only, never another CA.
    """
    _check_name(common_name, "The CA name")
    key = new_private_key(key_type)
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(
            x509.NameAttribute(
                NameOID.ORGANIZATION_NAME, _check_name(organization, "The organization")
            )
        )
    name = x509.Name(attributes)
    now = _now()
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(public), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def load_ca_certificate(pem):
    """An imported CA certificate (the company's own PKI), checked to be a CA."""
    if not isinstance(pem, bytes) or len(pem) > 65536:
        raise X509Error("a CA certificate must be a PEM file of at most 64 KB")
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise X509Error("this is not a PEM certificate") from exc
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound as exc:
        raise X509Error("this certificate is not a CA (no basic constraints)") from exc
    if not constraints.value.ca:
        raise X509Error("this certificate is not a CA")
    return cert


def load_csr(pem):
    """A device's certificate signing request, checked: PEM, at most
    :data:`MAX_CSR_BYTES`, a valid self-signature, and an EC P-256/P-384 or
    RSA 2048-4096 key."""
    if isinstance(pem, str):
        pem = pem.encode("utf-8", "surrogatepass")
    if not isinstance(pem, bytes) or not pem:
        raise X509Error("the CSR must be a PEM text")
    if len(pem) > MAX_CSR_BYTES:
        raise X509Error(f"the CSR must be at most {MAX_CSR_BYTES} bytes")
    if b"\0" in pem:
        raise X509Error("the CSR must not contain NUL bytes")
    try:
        csr = x509.load_pem_x509_csr(pem)
    except (ValueError, TypeError) as exc:
        raise X509Error("this is not a PEM certificate signing request") from exc
    # a mangled CSR can make OpenSSL fail in any of these (cryptography then
    # raises InternalError or UnsupportedAlgorithm): all of it is "refused"
    try:
        key = csr.public_key()
        valid = csr.is_signature_valid
    except (
        ValueError,
        TypeError,
        InvalidSignature,
        InternalError,
        UnsupportedAlgorithm,
    ):
        valid = False
    if not valid:
        raise X509Error("the CSR's signature is not valid")
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in CURVES:
            raise X509Error("an EC key must be on P-256 or P-384")
    elif isinstance(key, rsa.RSAPublicKey):
        if not RSA_MIN_BITS <= key.key_size <= RSA_MAX_BITS:
            raise X509Error(
                f"an RSA key must have {RSA_MIN_BITS} to {RSA_MAX_BITS} bits"
            )
    else:
        raise X509Error("the key must be EC (P-256, P-384) or RSA")
    return csr


def hardware_uri(hardware_id):
    """The SAN URI naming a hardware id, percent-encoded (no ambiguity)."""
    return HARDWARE_URN + quote(_check_name(hardware_id, "The hardware id"), safe="")


def issue_certificate(
    public_key, ca_key, ca_cert, username, hardware_id=None, days=365, crl_url=None
):
    """A device certificate for ``public_key``: CN = the MQTT ``username``,
    SAN with the hardware id, clientAuth only, a CRL distribution point."""
    _check_name(username, "The username")
    now = _now()
    not_after = min(now + datetime.timedelta(days=days), ca_cert.not_valid_after)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, username)]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if hardware_id:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(hardware_uri(hardware_id))]
            ),
            critical=False,
        )
    if crl_url:
        builder = builder.add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        full_name=[x509.UniformResourceIdentifier(crl_url)],
                        relative_name=None,
                        reasons=None,
                        crl_issuer=None,
                    )
                ]
            ),
            critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256())


def sign_csr(
    csr_pem, ca_key, ca_cert, username, hardware_id=None, days=365, crl_url=None
):
    """Check ``csr_pem`` (:func:`load_csr`) and issue its certificate; the
    CSR's own subject and extensions are ignored (Odoo names the device)."""
    csr = load_csr(csr_pem)
    return issue_certificate(
        csr.public_key(), ca_key, ca_cert, username, hardware_id, days, crl_url
    )


def pkcs12_bundle(
    username, ca_key, ca_cert, password, hardware_id=None, days=365, crl_url=None
):
    """For a device that cannot make a CSR: a new key and its certificate,
    as a PKCS#12 file encrypted with ``password`` (bytes)."""
    key = new_private_key("ec")
    cert = issue_certificate(
        key.public_key(), ca_key, ca_cert, username, hardware_id, days, crl_url
    )
    data = pkcs12.serialize_key_and_certificates(
        username.encode(),
        key,
        cert,
        [ca_cert],
        serialization.BestAvailableEncryption(password),
    )
    return data, cert


def build_crl(ca_key, ca_cert, revoked, hours=24):
    """The CA's CRL: ``revoked`` is [(serial, revoked_at datetime)]; valid
    for ``hours``. Returns the CRL object (``.public_bytes`` for DER/PEM)."""
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - datetime.timedelta(minutes=5))
        .next_update(now + datetime.timedelta(hours=hours))
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    for serial, revoked_at in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(revoked_at)
            .build()
        )
    return builder.sign(ca_key, hashes.SHA256())


def certificate_facts(cert):
    """What the device form shows of a certificate."""
    common_names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return {
        "serial": format(cert.serial_number, "x"),
        "common_name": common_names[0].value if common_names else "",
        "not_before": cert.not_valid_before,
        "not_after": cert.not_valid_after,
        "fingerprint_sha256": hashlib.sha256(
            cert.public_bytes(serialization.Encoding.DER)
        ).hexdigest(),
    }
