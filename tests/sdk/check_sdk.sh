#!/usr/bin/env bash
# The SDK end to end, as a plugin author meets it: install the toolkit into a prefix, move the
# prefix (the CMake package must be relocatable), build plugins/template and plugins/examples/fsq
# out of tree with find_package(ProtoQuant), run the template's own tests, run check-plugin on
# both, and run an experiment that uses the example plugin.
#   tests/sdk/check_sdk.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
source=$(cd "$2" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/protoquant-sdk.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail() { echo "check_sdk: $*" >&2; exit 1; }

cmake --install "$build" --prefix "$work/first" > "$work/install.log" || { cat "$work/install.log"; fail "install failed"; }
mv "$work/first" "$work/prefix"
prefix="$work/prefix"

# The install tree: the executable, the core with its SOVERSION, the built-in plugins, the
# package, and the public headers only.
sdk=$(sed -n 's/^#define PROTOQUANT_SDK_VERSION \([0-9]*\)$/\1/p' "$source/core/include/protoquant/plugin.h")
[[ -n "$sdk" ]] || fail "no PROTOQUANT_SDK_VERSION in plugin.h"
for f in bin/protoquant "lib/libprotoquant_core.so.$sdk" lib/cmake/ProtoQuant/ProtoQuantConfig.cmake \
         lib/cmake/ProtoQuant/ProtoQuantTargets.cmake lib/cmake/ProtoQuant/ProtoQuantSDK.cmake \
         lib/protoquant/plugins/protoquant_quantizers.so include/protoquant/plugin.h include/protoquant/conformance.h; do
  [[ -e "$prefix/$f" ]] || fail "install tree lacks $f"
done
installed=$(cd "$prefix/include/protoquant" && ls | sort)
public=$(cd "$source/core/include/protoquant" && ls | sort)
[[ "$installed" == "$public" ]] || fail "installed headers differ from core/include/protoquant: $(diff <(echo "$installed") <(echo "$public") | tr '\n' ' ')"
for internal in "$source"/core/internal/protoquant/*.h; do
  [[ ! -e "$prefix/include/protoquant/$(basename "$internal")" ]] || fail "internal header $(basename "$internal") installed"
done
listing=$("$prefix/bin/protoquant" plugins)
[[ "$listing" == *"$prefix/lib/protoquant/plugins/protoquant_quantizers.so"* ]] || fail "the installed protoquant does not find its plugins beside it"

launcher=()
command -v ccache > /dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
configure() {  # SOURCE BUILD
  cmake -S "$1" -B "$2" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" "${launcher[@]}" \
    > "$2.log" 2>&1 || { cat "$2.log"; fail "configuring $1 failed"; }
  cmake --build "$2" -j 2 >> "$2.log" 2>&1 || { tail -50 "$2.log"; fail "building $1 failed"; }
}

configure "$source/plugins/template" "$work/template"
ctest --test-dir "$work/template" --output-on-failure > "$work/template-tests.log" 2>&1 ||
  { cat "$work/template-tests.log"; fail "the template's tests failed"; }
"$prefix/bin/protoquant" check-plugin "$work/template/my_plugin.so" || fail "check-plugin failed on the template"

configure "$source/plugins/examples/fsq" "$work/fsq"
"$prefix/bin/protoquant" check-plugin "$work/fsq/fsq.so" || fail "check-plugin failed on the FSQ example"

# An experiment with the example plugin: the example manifest, shrunk to seconds.
cat > "$work/fsq_tiny.toml" <<TOML
extends = "$source/plugins/examples/fsq/fsq_synthparts.toml"
[experiment]
name = "fsq-tiny"
threads = 2
[dataset]
classes = 4
train_per_class = 16
test_per_class = 8
image_size = 32
train_transform = []
eval_transform = []
[backbone]
width = 8
[stages.blackbox]
epochs = 1
[stages.codebook]
epochs = 1
[stages.head]
epochs = 1
[[metrics]]
type = "accuracy"
[report]
explanations_per_class = 0
TOML
"$prefix/bin/protoquant" --plugin "$work/fsq/fsq.so" run "$work/fsq_tiny.toml" --out "$work/run" > "$work/run.log" 2>&1 ||
  { tail -30 "$work/run.log"; fail "the FSQ experiment failed"; }
grep -q '"type": "fsq"' "$work/run/results.json" || fail "the run's results do not name the fsq quantizer"
grep -q "fsq" "$work/run/report.html" || fail "the report does not name the fsq quantizer"
echo "check_sdk: install, template, example plugin, check-plugin and the FSQ experiment all passed"
