# deploy/deps.sh — sourced by deploy/run.sh and tests/run.sh.
# need_packages PKG...: installs with apt-get whatever of PKG is missing.
need_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=()
  [ "$(id -u)" -ne 0 ] && sudo=(sudo)
  echo "installing: ${missing[*]}" >&2
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# libpq-dev for its header only: skynet loads libpq5 with dlopen() when a
# postgresql:// database is used.  No libcurl: HTTP is engine/http.c on mbedtls.
BUILD_PACKAGES=(build-essential cmake pkg-config libjson-c-dev libpq-dev libpq5
                libyaml-dev libmbedtls-dev libsqlite3-dev libmicrohttpd-dev ca-certificates)
