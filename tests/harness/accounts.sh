#!/bin/bash
# Test accounts for spore's sudo/su/doas/ssh tests.
#
#   accounts.sh create STATE_DIR   make accounts, keys, sudoers + doas rules
#   accounts.sh check  STATE_DIR   exit 0 only if all of it is in place and
#                                  STATE_DIR still matches the system
#   accounts.sh remove [STATE_DIR] delete all of it (and the files create
#                                  wrote into STATE_DIR, if given)
#
# Needs root; exits 77 (the "skip" code of ctest/automake) otherwise.
# Everything it creates on the system is named spore-test*.  See README.md.
set -eu
umask 077
export LC_ALL=C

PREFIX=spore-test
ACCOUNTS="spore-test-key spore-test-pw spore-test-sudo-nopw spore-test-sudo-pw
spore-test-nosudo spore-test-target spore-test-doas-nopw spore-test-doas-pw"
# Every account except these gets STATE_DIR/id_ed25519 in authorized_keys.
NO_KEY_ACCOUNTS="spore-test-pw"
USER_SHELL=/bin/bash

SUDOERS_FILE=/etc/sudoers.d/spore-test
DOAS_CONF=${SPORE_TEST_DOAS_CONF:-/etc/doas.conf}
DOAS_BEGIN="# BEGIN spore-test"
DOAS_END="# END spore-test"
DOAS_CREATED_NOTE="# spore-test: this file did not exist before; remove deletes it if nothing else is left"
DOAS_NEWLINE_NOTE="# spore-test: the line before this block had no newline; remove takes it away again"
LOCK_FILE=/run/spore-test-harness.lock

die() { echo "accounts.sh: $*" >&2; exit 1; }
log() { echo "accounts.sh: $*" >&2; }

usage() {
    echo "usage: accounts.sh create STATE_DIR | check STATE_DIR | remove [STATE_DIR]" >&2
    exit 2
}

# Single-quote a value for a file that sh/bash will source.
shquote() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }

# 16 random alphanumerics from /dev/urandom.
randpw() {
    local s=""
    while [ "${#s}" -lt 16 ]; do
        s=$s$(head -c 64 /dev/urandom | tr -dc 'A-Za-z0-9')
    done
    printf '%s' "${s:0:16}"
}

# spore-test-sudo-pw -> SUDO_PW
varname() { local n=${1#"$PREFIX"-}; n=${n//-/_}; printf '%s' "${n^^}"; }

user_exists() { getent passwd "$1" >/dev/null 2>&1; }

user_home() { getent passwd "$1" | cut -d: -f6; }

# The password hash field of /etc/shadow for the accounts: remembered by
# create, compared by check, so check notices when the passwords in
# STATE_DIR/passwords are no longer the real ones (e.g. another create with a
# different STATE_DIR ran since).
shadow_stamp() {
    local u
    for u in $ACCOUNTS; do
        printf '%s %s\n' "$u" "$(getent shadow "$u" | cut -d: -f2)"
    done | sha256sum | cut -d' ' -f1
}

lock() {
    exec 9>"$LOCK_FILE"
    flock -w 120 9 || die "timed out waiting for $LOCK_FILE"
}

require_root() {
    if [ "$(id -u)" != 0 ]; then
        echo "accounts.sh: must be run as root (uid is $(id -u)); skipping" >&2
        exit 77
    fi
}

sudoers_content() {
    cat <<'EOF'
# spore-test: test accounts of the spore test harness (tests/harness/accounts.sh).
# Removed by "accounts.sh remove".  Do not edit.
spore-test-sudo-nopw ALL=(root,spore-test-target) NOPASSWD: ALL
spore-test-sudo-pw ALL=(root,spore-test-target) ALL
# Ask for the password every time (no cached credentials between tests),
# and always print the lecture before the prompt, so what a test sees does
# not depend on what ran before it.
Defaults:spore-test-sudo-pw timestamp_timeout=0, lecture=always
EOF
}

doas_block() {
    echo "$DOAS_BEGIN"
    case " $* " in *" created "*) echo "$DOAS_CREATED_NOTE" ;; esac
    case " $* " in *" newline "*) echo "$DOAS_NEWLINE_NOTE" ;; esac
    cat <<'EOF'
permit nopass spore-test-doas-nopw as root
permit nopass spore-test-doas-nopw as spore-test-target
permit spore-test-doas-pw as root
permit spore-test-doas-pw as spore-test-target
EOF
    echo "$DOAS_END"
}

# doas.conf without our block, byte for byte what it was before doas_add
# (including a missing newline at the end of the last line, unless $1 is
# "keep-newline").
doas_strip() {
    awk -v b="$DOAS_BEGIN" -v e="$DOAS_END" -v nl="$DOAS_NEWLINE_NOTE" -v keep="${1:-}" '
        $0 == b { skip = 1; before = n; next }
        skip && $0 == nl { nonl = before; next }
        $0 == e { skip = 0; next }
        !skip { line[++n] = $0 }
        END {
            for (i = 1; i <= n; i++)
                printf "%s%s", line[i], (i == n && i == nonl && keep == "") ? "" : "\n"
        }' "$DOAS_CONF"
}

doas_has_block() {
    [ -f "$DOAS_CONF" ] && grep -qxF "$DOAS_BEGIN" "$DOAS_CONF" && grep -qxF "$DOAS_END" "$DOAS_CONF"
}

doas_validate() {
    # opendoas: "doas -C file" parses file and reports errors, exit 0 if ok.
    if command -v doas >/dev/null 2>&1; then
        doas -C "$1" || return 1
    fi
}

# Atomically replace $DOAS_CONF with the file $1, keeping owner and mode of
# the existing file (doas refuses a config writable by group or others).
doas_install() {
    local tmp=$1
    if [ -f "$DOAS_CONF" ]; then
        chmod --reference="$DOAS_CONF" "$tmp"
        chown --reference="$DOAS_CONF" "$tmp"
    else
        chmod 0600 "$tmp"
        chown root:root "$tmp"
    fi
    mv -f "$tmp" "$DOAS_CONF"
}

doas_add() {
    local tmp="$DOAS_CONF.spore-test.tmp" notes=""
    if [ ! -f "$DOAS_CONF" ]; then
        notes=created
        : >"$tmp"
    elif grep -qxF "$DOAS_BEGIN" "$DOAS_CONF"; then
        # Re-create: keep the notes of the earlier create.
        if grep -qxF "$DOAS_CREATED_NOTE" "$DOAS_CONF"; then notes=created; fi
        if grep -qxF "$DOAS_NEWLINE_NOTE" "$DOAS_CONF"; then notes="$notes newline"; fi
        doas_strip keep-newline >"$tmp"
    else
        cat "$DOAS_CONF" >"$tmp"
        # Our block must start on a line of its own.
        if [ -s "$tmp" ] && [ -n "$(tail -c1 "$tmp")" ]; then
            echo >>"$tmp"
            notes=newline
        fi
    fi
    doas_block $notes >>"$tmp"
    if ! doas_validate "$tmp"; then
        rm -f "$tmp"
        die "$DOAS_CONF with the spore-test rules does not validate (doas -C)"
    fi
    doas_install "$tmp"
}

doas_remove() {
    [ -f "$DOAS_CONF" ] && grep -qxF "$DOAS_BEGIN" "$DOAS_CONF" || return 0
    local tmp="$DOAS_CONF.spore-test.tmp" created=""
    if grep -qxF "$DOAS_CREATED_NOTE" "$DOAS_CONF"; then created=1; fi
    doas_strip >"$tmp"
    if [ -n "$created" ] && ! grep -q '[^[:space:]]' "$tmp"; then
        rm -f "$tmp" "$DOAS_CONF"
    else
        doas_install "$tmp"
    fi
}

write_authorized_keys() {
    local user=$1 home keys
    shift
    home=$(user_home "$user")
    [ -n "$home" ] && [ -d "$home" ] || die "no home directory for $user"
    install -d -m 0700 -o "$user" -g "$(id -gn "$user")" "$home/.ssh"
    keys="$home/.ssh/authorized_keys"
    cat "$@" >"$keys.tmp"
    chown "$user:$(id -gn "$user")" "$keys.tmp"
    chmod 0600 "$keys.tmp"
    mv -f "$keys.tmp" "$keys"
}

# Kill every process of $1 and wait until they are gone.
kill_user() {
    local user=$1 _
    pkill -KILL -u "$user" 2>/dev/null || true
    for _ in $(seq 1 50); do
        pgrep -u "$user" >/dev/null 2>&1 || return 0
        sleep 0.1
        pkill -KILL -u "$user" 2>/dev/null || true
    done
    log "warning: processes of $user still running: $(pgrep -u "$user" | tr '\n' ' ')"
}

cmd_create() {
    local state=$1 u pw old_pw
    require_root
    lock
    case $state in /*) ;; *) state=$(pwd)/$state ;; esac
    mkdir -p "$state"
    chmod 0700 "$state"

    # Client keys.
    if [ ! -f "$state/id_ed25519" ] || [ ! -f "$state/id_ed25519.pub" ]; then
        rm -f "$state/id_ed25519" "$state/id_ed25519.pub"
        ssh-keygen -q -t ed25519 -N '' -C spore-test-key -f "$state/id_ed25519"
    fi
    if [ ! -s "$state/passphrase" ] || [ ! -f "$state/id_ed25519_pp" ] || [ ! -f "$state/id_ed25519_pp.pub" ]; then
        rm -f "$state/id_ed25519_pp" "$state/id_ed25519_pp.pub"
        randpw >"$state/passphrase.tmp"
        ssh-keygen -q -t ed25519 -N "$(cat "$state/passphrase.tmp")" -C spore-test-key-pp -f "$state/id_ed25519_pp"
        mv -f "$state/passphrase.tmp" "$state/passphrase"
    fi
    chmod 0600 "$state/id_ed25519" "$state/id_ed25519_pp" "$state/passphrase"

    # Accounts.  Passwords already in STATE_DIR/passwords are kept, so
    # running create twice with the same STATE_DIR changes nothing.
    : >"$state/passwords.tmp"
    chmod 0600 "$state/passwords.tmp"
    for u in $ACCOUNTS; do
        if ! user_exists "$u"; then
            useradd -m -d "/home/$u" -s "$USER_SHELL" -U -c "spore test account" "$u"
        elif [ "$(getent passwd "$u" | cut -d: -f7)" != "$USER_SHELL" ]; then
            usermod -s "$USER_SHELL" "$u"
        fi
        old_pw=""
        if [ -f "$state/passwords" ]; then
            old_pw=$(awk -v u="$u" '$1 == u { print $2; exit }' "$state/passwords")
        fi
        pw=${old_pw:-$(randpw)}
        printf '%s:%s\n' "$u" "$pw" | chpasswd
        usermod -U "$u" 2>/dev/null || true
        printf '%s %s\n' "$u" "$pw" >>"$state/passwords.tmp"
    done
    mv -f "$state/passwords.tmp" "$state/passwords"

    # ssh keys: spore-test-key gets both keys, everybody but spore-test-pw the
    # plain one, spore-test-pw nothing (and sshd.sh turns pubkey auth off for it).
    for u in $ACCOUNTS; do
        case " $NO_KEY_ACCOUNTS " in
            *" $u "*) write_authorized_keys "$u" /dev/null ;;
            *) if [ "$u" = spore-test-key ]; then
                   write_authorized_keys "$u" "$state/id_ed25519.pub" "$state/id_ed25519_pp.pub"
               else
                   write_authorized_keys "$u" "$state/id_ed25519.pub"
               fi ;;
        esac
    done

    # sudo.
    sudoers_content >"$SUDOERS_FILE.tmp"   # a name with a dot: ignored by @includedir
    chmod 0440 "$SUDOERS_FILE.tmp"
    chown root:root "$SUDOERS_FILE.tmp"
    if ! visudo -cqf "$SUDOERS_FILE.tmp" >/dev/null; then
        visudo -cf "$SUDOERS_FILE.tmp" >&2 || true
        rm -f "$SUDOERS_FILE.tmp"
        die "generated sudoers file does not validate"
    fi
    mv -f "$SUDOERS_FILE.tmp" "$SUDOERS_FILE"

    # doas.
    doas_add

    # env file.
    {
        echo "# spore test accounts (tests/harness/accounts.sh); source me"
        echo "export SPORE_TEST_STATE=$(shquote "$state")"
        echo "export SPORE_TEST_KEY=$(shquote "$state/id_ed25519")"
        echo "export SPORE_TEST_KEY_PP=$(shquote "$state/id_ed25519_pp")"
        echo "export SPORE_TEST_PASSPHRASE=$(shquote "$(cat "$state/passphrase")")"
        echo "export SPORE_TEST_USERS=$(shquote "$(echo $ACCOUNTS)")"
        while read -r u pw; do
            echo "export SPORE_TEST_PW_$(varname "$u")=$(shquote "$pw")"
        done <"$state/passwords"
    } >"$state/env.tmp"
    chmod 0600 "$state/env.tmp"
    mv -f "$state/env.tmp" "$state/env"
    shadow_stamp >"$state/shadow.stamp"
    chmod 0600 "$state/shadow.stamp"
}

# Prints what is missing; returns non-zero if anything is.
cmd_check() {
    local state=$1 u bad=0 home pub
    require_root
    case $state in /*) ;; *) state=$(pwd)/$state ;; esac
    miss() { echo "accounts.sh check: $*" >&2; bad=1; }
    [ -d "$state" ] || { miss "no state dir $state"; return 1; }
    for f in passwords env passphrase id_ed25519 id_ed25519.pub id_ed25519_pp id_ed25519_pp.pub shadow.stamp; do
        [ -f "$state/$f" ] || miss "missing $state/$f"
    done
    [ "$bad" = 0 ] || return 1
    for u in $ACCOUNTS; do
        if ! user_exists "$u"; then miss "no account $u"; continue; fi
        grep -q "^$u [A-Za-z0-9]\{16\}\$" "$state/passwords" || miss "no password for $u in $state/passwords"
        home=$(user_home "$u")
        [ -d "$home" ] || { miss "no home for $u"; continue; }
        case " $NO_KEY_ACCOUNTS " in
            *" $u "*) ;;
            *) pub=$(cut -d' ' -f1,2 "$state/id_ed25519.pub")
               grep -qF "$pub" "$home/.ssh/authorized_keys" 2>/dev/null || miss "$u: key not authorized" ;;
        esac
    done
    if [ "$bad" = 0 ] && [ "$(shadow_stamp)" != "$(cat "$state/shadow.stamp")" ]; then
        miss "passwords in /etc/shadow changed since $state was written"
    fi
    pub=$(cut -d' ' -f1,2 "$state/id_ed25519_pp.pub")
    grep -qF "$pub" /home/spore-test-key/.ssh/authorized_keys 2>/dev/null || miss "spore-test-key: passphrase key not authorized"
    if [ ! -f "$SUDOERS_FILE" ]; then
        miss "missing $SUDOERS_FILE"
    elif [ "$(cat "$SUDOERS_FILE")" != "$(sudoers_content)" ]; then
        miss "$SUDOERS_FILE differs from what create writes"
    elif ! visudo -cqf "$SUDOERS_FILE" >/dev/null 2>&1; then
        miss "$SUDOERS_FILE does not validate"
    fi
    if ! doas_has_block; then
        miss "no spore-test block in $DOAS_CONF"
    elif ! doas_validate "$DOAS_CONF" 2>/dev/null; then
        miss "$DOAS_CONF does not validate"
    fi
    return "$bad"
}

cmd_remove() {
    local state=${1:-} u g
    require_root
    lock
    # Every spore-test-* account, not just the ones we know about now.
    for u in $(getent passwd | cut -d: -f1 | grep "^$PREFIX-" || true); do
        kill_user "$u"
        # The agent caches spore keeps for an account without a usable
        # XDG_RUNTIME_DIR or HOME (sudo as root keeps HOME=/root).
        local uid d
        uid=$(id -u "$u")
        for d in "/dev/shm/spore-$uid" "/tmp/spore-$uid" "/var/tmp/spore-$uid"; do
            if [ -d "$d" ] && [ ! -L "$d" ] && [ "$(stat -c %u "$d")" = "$uid" ]; then rm -rf "$d"; fi
        done
        userdel -r "$u" >/dev/null 2>&1 || userdel -rf "$u" >/dev/null 2>&1 || log "warning: userdel $u failed"
        rm -rf "/home/${u:?}" "/var/mail/${u:?}" "/var/spool/mail/${u:?}"
    done
    for g in $(getent group | cut -d: -f1 | grep "^$PREFIX-" || true); do
        groupdel "$g" 2>/dev/null || log "warning: groupdel $g failed"
    done
    # sudo's per-user state (lecture flag, credential cache).
    rm -rf /var/lib/sudo/lectured/"$PREFIX"-* /run/sudo/ts/"$PREFIX"-* /var/run/sudo/ts/"$PREFIX"-*
    rm -f "$SUDOERS_FILE" "$SUDOERS_FILE.tmp"
    rm -f "$DOAS_CONF.spore-test.tmp"
    doas_remove
    if [ -n "$state" ] && [ -d "$state" ]; then
        rm -f "$state"/passwords "$state"/passwords.tmp "$state"/env "$state"/env.tmp \
              "$state"/passphrase "$state"/passphrase.tmp "$state"/shadow.stamp \
              "$state"/id_ed25519 "$state"/id_ed25519.pub "$state"/id_ed25519_pp "$state"/id_ed25519_pp.pub
    fi
    rm -f "$LOCK_FILE"
}

[ $# -ge 1 ] || usage
case $1 in
    create) [ $# -eq 2 ] || usage; cmd_create "$2" ;;
    check)  [ $# -eq 2 ] || usage; cmd_check "$2" ;;
    remove) [ $# -le 2 ] || usage; cmd_remove "${2:-}" ;;
    *) usage ;;
esac
