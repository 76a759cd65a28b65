"""Full-match grammars for every stack value that lands in a file, a table, DNS or a script.

A stack value is hostile until its field's grammar accepts the whole of it: no control
characters, no whitespace where the format forbids it, bounded length.  Each check
raises ValueError with the fix in words; config.py turns that into a keyed problem.
Python's `$` also matches before a final newline, so every pattern here is used with
`re.fullmatch`, never `re.match`.
"""

from __future__ import annotations

import ipaddress
import re

LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
# _spf, _dmarc: DNS names that are not host names (63 octets per label, the underscore included)
SERVICE_LABEL = re.compile(r"_(?!-)[a-z0-9-]{1,62}(?<!-)|(?!-)[a-z0-9-]{1,63}(?<!-)")
# Local parts: the dot-atom subset that means nothing special to Postfix ($ expands in main.cf and in
# regexp results, % and ! are relay tricks, ',' and whitespace split lists) nor to DMARC (';' ',' '!').
LOCAL_PART = re.compile(r"[A-Za-z0-9_+=-]+(?:\.[A-Za-z0-9_+=-]+)*")
LOG_COMPONENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")
SASL_USERNAME = re.compile(r"[!-9;-~]{1,256}")  # printable ASCII without ':' (sasl_passwd splits user:password)
SUBNET_ID = re.compile(r"subnet-[0-9a-f]{8,17}")
AMI_ID = re.compile(r"ami-[0-9a-f]{8,17}")
INSTANCE_TYPE = re.compile(r"[a-z][a-z0-9-]{0,15}\.[a-z0-9]{1,16}")
ZONE_ID = re.compile(r"Z[A-Z0-9]{1,31}")
# An OpenSSH public host key as pinned: the type, one space, the base64 blob (no comment).
HOST_KEY = re.compile(
    r"(ssh-ed25519|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521|ssh-rsa) [A-Za-z0-9+/=]{40,4096}"
)
SSH_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
MAX_FQDN = 253
MAX_MAILBOX = 254
# Documentation ranges are accepted as public so that examples and the lab (which uses them) run.
DOCUMENTATION = tuple(ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",
                                                        "2001:db8::/32"))


def printable(value: str, what: str) -> str:
    """Refuse control characters, non-ASCII and surrounding whitespace in any value."""
    if not value.isascii() or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError(f"{what} must be plain ASCII on one line, without control characters")
    if value != value.strip():
        raise ValueError(f"{what} must not start or end with whitespace")
    return value


def label(value: str, what: str, example: str) -> str:
    if not LABEL.fullmatch(value):
        raise ValueError(f"{value!r} must be one lowercase DNS label (letters, digits, '-'), e.g. {example!r}; "
                         f"it names {what}")
    return value


def fqdn(value: str, what: str, service_labels: bool = False) -> str:
    """A lowercase LDH name with at least two labels; one trailing dot is dropped.

    `service_labels` also admits labels such as `_spf` (names looked up, never a host's own)."""
    printable(value, what)
    name = value.removesuffix(".").lower()
    labels = name.split(".")
    pattern = SERVICE_LABEL if service_labels else LABEL
    numeric_top = labels[-1].isdigit()  # RFC 7208 §7.1 toplabel; Postfix would take it for an address
    if len(labels) < 2 or len(name) > MAX_FQDN or numeric_top or not all(pattern.fullmatch(p) for p in labels):
        raise ValueError(f"{value!r} is not a fully qualified domain name; give {what} such as 'example.com'")
    return name


def mailbox(value: str, what: str) -> str:
    """local@domain with a conservative local part; the domain is an FQDN (lowercased)."""
    printable(value, what)
    local, _, domain = value.rpartition("@")
    # without '@' the local part is empty, which LOCAL_PART refuses
    if len(value) > MAX_MAILBOX or len(local) > 64 or not LOCAL_PART.fullmatch(local):
        raise ValueError(f"{value!r} is not an e-mail address this program can write safely: use letters, digits "
                         "and . _ + = - before the @ (Postfix and DMARC give $ % ! ; , and spaces special meanings)")
    return f"{local}@{fqdn(domain, 'the domain of ' + what)}"


def log_file(value: str) -> str:
    """An absolute path below /var/log/ made of plain components (no '..', no '//', no spaces)."""
    printable(value, "maillogFile")
    parts = value.removeprefix("/var/log/").split("/") if value.startswith("/var/log/") else []
    if not parts or len(value) > 200 or not all(LOG_COMPONENT.fullmatch(p) for p in parts):
        raise ValueError(f"{value!r} must be a file under /var/log/ named with letters, digits and . _ - "
                         "(no '..', no spaces), e.g. /var/log/postfix.log")
    return value


def sasl_username(value: str) -> str:
    if not SASL_USERNAME.fullmatch(value):
        raise ValueError("must be 1-256 printable ASCII characters without spaces or ':' (sasl_passwd reads "
                         "'user:password'); copy the user name your mail provider gives you")
    return value


def sasl_password_problem(value: str) -> str | None:
    """Why a relay password cannot go into sasl_passwd (never quoting it), or None."""
    if not value:
        return "is empty"
    if not value.isascii() or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return "must be printable ASCII on one line"
    if value != value.strip():
        return "must not start or end with whitespace (Postfix would drop it)"
    if len(value) > 512:
        return "is longer than 512 characters"
    return None


def aws_id(value: str, pattern: re.Pattern[str], what: str, example: str) -> str:
    if not pattern.fullmatch(value):
        raise ValueError(f"{value!r} is not {what}; copy it from the AWS console, e.g. {example!r}")
    return value


def public_address(value: str, version: int, what: str) -> str:
    """A global unicast address (documentation ranges allowed for examples and the lab), canonical text."""
    printable(value, what)
    try:
        ip = ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv{version} address; give {what}") from None
    documentation = any(ip in net for net in DOCUMENTATION)
    mapped = isinstance(ip, ipaddress.IPv6Address) and (ip.ipv4_mapped is not None or ip.sixtofour is not None
                                                         or ip.teredo is not None)
    if mapped or ip.is_multicast or not (ip.is_global or documentation):
        raise ValueError(f"{value!r} is not a public unicast address (loopback, private, link-local, shared, "
                         f"multicast and mapped addresses cannot be reached by receivers); give {what}")
    return str(ip)


def network(value: str, what: str, min_prefix: int = 8) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A CIDR without host bits and no wider than /min_prefix."""
    printable(value, what)
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as error:
        if "host bits set" in str(error):
            wide = ipaddress.ip_network(value, strict=False)
            raise ValueError(f"{value!r} has host bits set; write the network {wide} or the host "
                             f"{value.split('/')[0]}/{wide.max_prefixlen}") from None
        raise ValueError(f"{value!r} is not a CIDR; write e.g. '203.0.113.7/32' for {what}") from None
    if net.prefixlen < min_prefix:
        raise ValueError(f"{value!r} is wider than /{min_prefix}; list only the networks you mean ({what})")
    return net
