# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
import base64
import datetime
import random
import subprocess
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from odoo.tests import BaseCase, tagged

from ..tools import x509 as iot_x509

CRL_URL = "http://127.0.0.1:8069/iot/ca/1/crl"


def csr_pem(key, common_name="anything", algorithm=None):
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    )
    request = builder.sign(key, algorithm)
    return request.public_bytes(serialization.Encoding.PEM)


def reencode(der):
    body = base64.encodebytes(der).decode().replace("\n", "")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return (
        "-----BEGIN CERTIFICATE REQUEST-----\n"
        + "\n".join(lines)
        + "\n-----END CERTIFICATE REQUEST-----\n"
    ).encode()


@tagged("post_install", "-at_install", "iot_x509")
class TestX509Tools(BaseCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.ca_key, cls.ca_cert = iot_x509.new_ca("Company A devices")

    def issue(self, pem, username="dev_a1", hardware_id="HW-01"):
        return iot_x509.sign_csr(
            pem, self.ca_key, self.ca_cert, username, hardware_id, 365, CRL_URL
        )

    def test_ca_is_a_ca_for_devices_only(self):
        constraints = self.ca_cert.extensions.get_extension_for_class(
            x509.BasicConstraints
        ).value
        self.assertTrue(constraints.ca)
        self.assertEqual(constraints.path_length, 0)
        usage = self.ca_cert.extensions.get_extension_for_class(x509.KeyUsage).value
        self.assertTrue(usage.key_cert_sign and usage.crl_sign)
        self.assertEqual(
            iot_x509.load_ca_certificate(
                iot_x509.certificate_pem(self.ca_cert)
            ).serial_number,
            self.ca_cert.serial_number,
        )
        _rsa_key, rsa_ca = iot_x509.new_ca("RSA CA", key_type="rsa")
        self.assertIsInstance(rsa_ca.public_key(), rsa.RSAPublicKey)

    def test_device_certificate_from_csr(self):
        device_key = ec.generate_private_key(ec.SECP256R1())
        cert = self.issue(csr_pem(device_key, "someone_else", hashes.SHA256()))
        # Odoo names the device: the CSR's subject is ignored
        self.assertEqual(
            cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value, "dev_a1"
        )
        self.assertEqual(cert.issuer, self.ca_cert.subject)
        self.assertEqual(
            cert.public_key().public_numbers(), device_key.public_key().public_numbers()
        )
        self.ca_key.public_key().verify(
            cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256())
        )
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        self.assertEqual(list(eku), [ExtendedKeyUsageOID.CLIENT_AUTH])
        self.assertFalse(
            cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        )
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        self.assertEqual(
            san.value.get_values_for_type(x509.UniformResourceIdentifier),
            ["urn:iot-base:hardware-id:HW-01"],
        )
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints)
        self.assertEqual(points.value[0].full_name[0].value, CRL_URL)
        lifetime = cert.not_valid_after - cert.not_valid_before
        self.assertLessEqual(lifetime, datetime.timedelta(days=365, minutes=5))
        facts = iot_x509.certificate_facts(cert)
        self.assertEqual(facts["serial"], format(cert.serial_number, "x"))
        self.assertEqual(facts["common_name"], "dev_a1")

    def test_hardware_id_cannot_forge_a_san(self):
        cert = self.issue(
            csr_pem(ec.generate_private_key(ec.SECP256R1()), algorithm=hashes.SHA256()),
            hardware_id="a,URI:evil/../x y",
        )
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        (uri,) = san.value.get_values_for_type(x509.UniformResourceIdentifier)
        self.assertEqual(uri, "urn:iot-base:hardware-id:a%2CURI%3Aevil%2F..%2Fx%20y")

    def test_openssl_verifies_and_the_crl_revokes(self):
        device_key = ec.generate_private_key(ec.SECP256R1())
        cert = self.issue(csr_pem(device_key, algorithm=hashes.SHA256()))
        other = self.issue(csr_pem(device_key, algorithm=hashes.SHA256()), "dev_a2")
        crl = iot_x509.build_crl(
            self.ca_key,
            self.ca_cert,
            [(cert.serial_number, datetime.datetime(2026, 1, 1))],
        )
        self.assertIsNotNone(
            crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        )
        self.assertIsNone(
            crl.get_revoked_certificate_by_serial_number(other.serial_number)
        )
        self.assertTrue(crl.is_signature_valid(self.ca_key.public_key()))
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            (tmp / "ca.pem").write_bytes(iot_x509.certificate_pem(self.ca_cert))
            (tmp / "crl.pem").write_bytes(crl.public_bytes(serialization.Encoding.PEM))
            for name, item in (("dev.pem", cert), ("other.pem", other)):
                (tmp / name).write_bytes(iot_x509.certificate_pem(item))

            def verify(name, *extra):
                return subprocess.run(
                    [
                        "openssl",
                        "verify",
                        "-purpose",
                        "sslclient",
                        *extra,
                        "-CAfile",
                        str(tmp / "ca.pem"),
                        str(tmp / name),
                    ],
                    capture_output=True,
                    text=True,
                    check=False,
                )

            self.assertEqual(verify("dev.pem").returncode, 0)
            revoked = verify("dev.pem", "-crl_check", "-CRLfile", str(tmp / "crl.pem"))
            self.assertNotEqual(revoked.returncode, 0)
            self.assertIn("revoked", revoked.stdout + revoked.stderr)
            self.assertEqual(
                verify(
                    "other.pem", "-crl_check", "-CRLfile", str(tmp / "crl.pem")
                ).returncode,
                0,
            )

    def test_pkcs12_bundle(self):
        data, cert = iot_x509.pkcs12_bundle(
            "dev_b1", self.ca_key, self.ca_cert, b"shown-once", "HW-B1"
        )
        key, loaded, extra = pkcs12.load_key_and_certificates(data, b"shown-once")
        self.assertEqual(loaded.serial_number, cert.serial_number)
        self.assertEqual(
            key.public_key().public_numbers(), cert.public_key().public_numbers()
        )
        self.assertEqual([c.serial_number for c in extra], [self.ca_cert.serial_number])
        with self.assertRaises(ValueError):
            pkcs12.load_key_and_certificates(data, b"wrong")

    def test_refused_csrs(self):
        good = csr_pem(
            ec.generate_private_key(ec.SECP256R1()), algorithm=hashes.SHA256()
        )
        der = x509.load_pem_x509_csr(good).public_bytes(serialization.Encoding.DER)
        broken_signature = bytearray(der)
        broken_signature[-3] ^= 0x55
        refused = {
            "empty": b"",
            "not a csr": b"hello",
            "text, not bytes": 12345,
            "NUL": good[:40] + b"\0" + good[40:],
            "huge": b"A" * (iot_x509.MAX_CSR_BYTES + 1),
            "bad signature": reencode(bytes(broken_signature)),
            "small RSA": csr_pem(
                rsa.generate_private_key(public_exponent=65537, key_size=1024),
                algorithm=hashes.SHA256(),
            ),
            "P-521? no: secp521r1 is refused": csr_pem(
                ec.generate_private_key(ec.SECP521R1()), algorithm=hashes.SHA256()
            ),
            "DSA": csr_pem(dsa.generate_private_key(2048), algorithm=hashes.SHA256()),
            "Ed25519": csr_pem(ed25519.Ed25519PrivateKey.generate()),
        }
        for label, pem in refused.items():
            with self.subTest(label), self.assertRaises(iot_x509.X509Error):
                self.issue(pem)

    def test_fuzzed_csrs_never_raise_anything_else(self):
        good = csr_pem(
            ec.generate_private_key(ec.SECP256R1()), algorithm=hashes.SHA256()
        )
        der = x509.load_pem_x509_csr(good).public_bytes(serialization.Encoding.DER)
        rng = random.Random(1906)
        issued = refused = 0
        for _i in range(300):
            mutated = bytearray(der)
            for _j in range(rng.randint(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            try:
                cert = self.issue(reencode(bytes(mutated)))
            except iot_x509.X509Error:
                refused += 1
            else:
                issued += 1
                # whatever the CSR said, the name is Odoo's
                self.assertEqual(
                    cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value,
                    "dev_a1",
                )
        self.assertEqual(issued + refused, 300)
        self.assertGreater(refused, 250)

    def test_refused_names(self):
        pem = csr_pem(
            ec.generate_private_key(ec.SECP256R1()), algorithm=hashes.SHA256()
        )
        for username in ("", "a" * 129, "dev\0x", "dev\u202ex", None):
            with self.subTest(username=username), self.assertRaises(iot_x509.X509Error):
                self.issue(pem, username=username)
        with self.assertRaises(iot_x509.X509Error):
            self.issue(pem, hardware_id="hw\x00")
        with self.assertRaises(iot_x509.X509Error):
            iot_x509.load_ca_certificate(
                iot_x509.certificate_pem(self.issue(pem))  # a device cert is no CA
            )
