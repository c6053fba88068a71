"""Credential stores in a session's HOME (the workspace), and who may read them.

The command analyser refuses commands that *name* a credential store; a program that
*finds* the stores at run time (``os.walk`` matching by content, ``readdirSync`` of
the browser profiles) names none. The file sensor therefore watches *reads* of the
stores themselves (fanotify ``FAN_ACCESS`` on the few directories that hold them) and
this module says, for each read, which store it is and what the reader is to it:

* ``consumer``: the store's own program (ssh/scp/sftp/ssh-add/ssh-keygen for keys,
  git and git-credential-* for .git-credentials, aws/kubectl/docker/npm/pip/twine
  for theirs), recognised by its executable's path in a system directory, never by
  argv[0] (a renamed copy of python called ``ssh`` runs from the workspace);
* ``bulk``: a program that reads a whole tree without looking at what it reads
  (git, tar, grep, rsync, cp, zip, sha256sum...): an archive of the workspace or a
  ``grep -r`` opens every store in it, honestly;
* ``program``: anything else (an interpreter, a program of the agent's own);
* ``unknown``: the opener exited before it could be looked at.

The judgement (rule ``credentials.store_collected_at_run_time``): a ``program`` that
opens stores of two or more kinds in one call is a collector, and so is one that
opens a store only its own application ever reads (saved browser passwords and
cookies, the GnuPG and pass stores, wallets) -- interpreters legitimately read the
stores their libraries consume (boto reads ~/.aws, requests reads ~/.netrc, the
kubernetes client ~/.kube/config, paramiko a key), one kind at a time.
"""

from __future__ import annotations

import fnmatch
import posixpath

__all__ = ["BULK", "CRED_DIRS", "OWNED", "ROOT_STORES", "role", "store_kind", "watch_dir"]

# workspace-relative glob -> store kind; checked in order
_STORES: tuple[tuple[str, str], ...] = (
    (".ssh/id_*.pub", ""), (".ssh/id_*", "ssh"), (".ssh/identity", "ssh"),
    (".aws/credentials", "aws"), (".aws/config", "aws"),
    (".config/gcloud/credentials.db", "gcloud"), (".config/gcloud/access_tokens.db", "gcloud"),
    (".config/gcloud/application_default_credentials.json", "gcloud"),
    (".azure/accessTokens.json", "azure"), (".azure/msal_token_cache*", "azure"),
    (".kube/config", "kube"), (".docker/config.json", "docker"),
    (".netrc", "netrc"), (".pgpass", "pgpass"), (".git-credentials", "git-credentials"),
    (".npmrc", "npmrc"), (".pypirc", "pypirc"), (".vault-token", "vault"),
    (".terraform.d/credentials*", "terraform"), (".gnupg/*", "gnupg"),
    (".password-store/*", "pass"),
    (".mozilla/firefox/*/logins.json", "browser"), (".mozilla/firefox/*/key4.db", "browser"),
    (".mozilla/firefox/*/key3.db", "browser"), (".mozilla/firefox/*/cookies.sqlite", "browser"),
    (".config/google-chrome/*/Login Data", "browser"),
    (".config/google-chrome/*/Cookies", "browser"),
    (".config/chromium/*/Login Data", "browser"), (".config/chromium/*/Cookies", "browser"),
    (".electrum/wallets/*", "wallet"), (".ethereum/keystore/*", "wallet"),
)

# Directories that hold stores (watched for opens where they exist or appear); the
# browsers' profile directories are one level below their entries here.
CRED_DIRS = frozenset({".ssh", ".aws", ".config/gcloud", ".azure", ".kube", ".docker",
                       ".terraform.d", ".gnupg", ".password-store", ".electrum/wallets",
                       ".ethereum/keystore"})
PROFILE_PARENTS = frozenset({".mozilla/firefox", ".config/google-chrome", ".config/chromium"})
# intermediate directories followed so that stores made later below them are found
FOLLOW_DIRS = frozenset({".mozilla", ".config", ".electrum", ".ethereum", *PROFILE_PARENTS})
ROOT_STORES = frozenset({".netrc", ".pgpass", ".git-credentials", ".npmrc", ".pypirc",
                         ".vault-token"})

# Stores only their own application reads: any other program opening one is collecting.
OWNED = frozenset({"browser", "gnupg", "pass", "wallet"})

_SYSTEM_DIRS = ("/usr/", "/bin/", "/sbin/", "/lib/", "/lib64/", "/opt/", "/nix/")
_CONSUMERS: dict[str, frozenset[str]] = {
    "ssh": frozenset({"ssh", "scp", "sftp", "ssh-add", "ssh-keygen", "ssh-agent", "sshfs"}),
    "aws": frozenset({"aws", "aws_completer", "terraform", "aws-vault"}),
    "gcloud": frozenset({"gcloud", "gsutil", "bq", "terraform"}),
    "azure": frozenset({"az", "terraform"}),
    "kube": frozenset({"kubectl", "helm", "k9s", "kubeadm", "oc"}),
    "docker": frozenset({"docker", "podman", "buildah", "skopeo", "crane"}),
    "netrc": frozenset({"curl", "wget", "ftp", "lftp", "git-remote-http", "git-remote-https"}),
    "pgpass": frozenset({"psql", "pg_dump", "pg_restore", "pg_dumpall"}),
    "git-credentials": frozenset(),  # git and git-credential-* (below)
    "npmrc": frozenset({"npm", "npx", "yarn", "pnpm", "npm-cli.js", "npx-cli.js", "yarn.js",
                        "pnpm.cjs"}),
    "pypirc": frozenset({"twine", "pip", "pip3"}),
    "vault": frozenset({"vault"}),
    "terraform": frozenset({"terraform"}),
    "gnupg": frozenset({"gpg", "gpg2", "gpg-agent", "gpgsm", "keyboxd", "dirmngr"}),
    "pass": frozenset({"pass", "gpg", "gpg2", "gpg-agent"}),
    "browser": frozenset({"firefox", "firefox-esr", "chrome", "google-chrome", "chromium",
                          "chromium-browser"}),
    "wallet": frozenset({"electrum", "geth"}),
}

# Programs that read whole trees without choosing what they read.
BULK = frozenset({"git", "tar", "bsdtar", "cpio", "grep", "egrep", "fgrep", "rg", "ag",
                  "rsync", "cp", "zip", "7z", "7za", "du", "find", "sha256sum", "sha1sum",
                  "md5sum", "sha512sum", "b2sum", "cksum", "rclone", "restic", "borg",
                  "duplicity", "dvc", "ctags", "file", "wc", "diff", "cmp", "ls", "stat",
                  "tree", "xargs", "gzip", "pigz", "xz", "zstd", "bzip2"})


def store_kind(rel: str) -> str | None:
    """The kind of credential store at workspace-relative ``rel`` (HOME is the
    workspace), or None for any other file."""
    for pattern, kind in _STORES:
        if fnmatch.fnmatchcase(rel, pattern):
            return kind or None
    return None


def watch_dir(rel: str) -> bool:
    """Is workspace-relative directory ``rel`` one whose opens are watched?"""
    return rel in CRED_DIRS or posixpath.dirname(rel) in PROFILE_PARENTS


_INTERPRETERS = ("python", "node", "nodejs", "perl", "ruby")


def role(exe: str | None, kind: str, script: str | None = None) -> str:
    """What the program at ``exe`` (as the sandbox sees it) is to a store of ``kind``:
    consumer, bulk, program or unknown (see the module's docstring). ``script``: the
    file an interpreter runs (its first argument); an installed program in a system
    directory (/usr/bin/aws, /usr/local/bin/twine, npm-cli.js) is what is run, while
    an agent's script anywhere else is just the interpreter."""
    if not exe:
        return "unknown"
    exe = exe.removesuffix(" (deleted)")
    name = posixpath.basename(exe)
    if not exe.startswith(_SYSTEM_DIRS):
        return "program"  # the agent's own file, whatever it is called
    if (script and script.startswith(_SYSTEM_DIRS) and ".." not in script
            and name.rstrip("0123456789.") in _INTERPRETERS):
        name = posixpath.basename(script)
    if name in _CONSUMERS.get(kind, ()):
        return "consumer"
    if kind in ("git-credentials", "netrc") and (
            name == "git" or name.startswith(("git-credential-", "git-remote-"))):
        return "consumer"
    if name in BULK or name.startswith("git-"):
        return "bulk"
    return "program"
