"""/etc/postfix as a fresh Debian install leaves it with "No configuration": no main.cf at all.

Test hosts start from this tree, never from the machine's own /etc/postfix, so a main.cf
some earlier run left on a developer's machine cannot make a test pass that fails on a
brand-new one.  Built from the package's pristine copies in /usr/share/postfix and the
package-owned helper files, as Debian's postinst does.

    python -m mailhost.lab.freshetc DEST    (used by .ci/run for a private mount namespace)
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ETC = Path("/etc/postfix")
SHARE = Path("/usr/share/postfix")
# postinst copies these from the package's .dist files when they are missing
FROM_DIST = {"master.cf": "master.cf.dist", "master.cf.proto": "master.cf.dist", "main.cf.proto": "main.cf.dist"}
# package files and the map-module list (which depends on installed packages, not on configuration)
AS_INSTALLED = ("dynamicmaps.cf", "post-install", "postfix-files", "postfix-script")
DIRECTORIES = ("dynamicmaps.cf.d", "postfix-files.d", "sasl")


def build(dest: Path) -> Path:
    """Fill `dest` (created 0755) with a fresh install's /etc/postfix; return it."""
    if not (SHARE / "master.cf.dist").is_file():
        raise RuntimeError(f"{SHARE}/master.cf.dist is missing: install Debian's postfix package (setup.sh)")
    dest.mkdir(mode=0o755, parents=True, exist_ok=True)
    for name, dist in FROM_DIST.items():
        shutil.copyfile(SHARE / dist, dest / name)
        (dest / name).chmod(0o644)
    for name in AS_INSTALLED:
        if (ETC / name).is_file():
            shutil.copy2(ETC / name, dest / name)
    (dest / "makedefs.out").symlink_to(SHARE / "makedefs.out")
    for name in DIRECTORIES:
        if (ETC / name).is_dir() and name != "sasl":  # sasl/ holds local SASL config: empty when fresh
            shutil.copytree(ETC / name, dest / name, symlinks=True)
        else:
            (dest / name).mkdir(mode=0o755)
    return dest


if __name__ == "__main__":
    build(Path(sys.argv[1]))
