#!/usr/bin/env python3
"""The includes of each layer follow its CMake link list.

    check_includes.py SOURCE_DIR LINKS_TSV

LINKS_TSV is written at configure time by cmake/CleanroomLayering.cmake:
for every src/<layer> folder with a target (cr_<layer>: src/cli is cr_cli,
src/mpi the cleanroom-mpi command), the cr_* targets it links directly and
transitively. The link
lists are the source of truth; this checks the sources agree with them.

Every src/<layer>/**/*.c|*.h (and every public header
include/cleanroom/<x>.h, as part of the layer x belongs to) may include
  - its own layer's headers,
  - "cleanroom/common.h",
  - the headers of layers its target links, directly or transitively:
      "cleanroom/<x>.h"   belongs to layer x when src/x exists, else to the
                          layer whose folder has <x>.c (template_sig.h: net)
      "<layer>/..."       a layer's internal header
      "cleanroom.pb-c.h"  the generated protobuf-c code, target cr_proto
Anything else fails, naming the file, the line and the link missing. Layer
folders without a target yet (no sources) are not checked, but including
them fails (nothing could provide them).
"""
import os
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]')
ALWAYS = {"cleanroom/common.h"}


def read_links(path):
    layers = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            cols = line.rstrip("\n").split("\t")
            if len(cols) != 4:
                sys.exit(f"{path}: malformed line: {line!r}")
            layer, target, direct, closure = cols
            layers[layer] = {"target": target, "direct": direct.split(),
                             "closure": set(closure.split())}
    return layers


def target_of(layer, layers):
    if layer in layers:
        return layers[layer]["target"]
    return f"cr_{layer}"


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src_root, links_path = sys.argv[1], sys.argv[2]
    if not os.path.exists(links_path):
        sys.exit(f"layering: {links_path} is missing: configure the build (cmake -S . -B build) "
                 "first; cmake/CleanroomLayering.cmake writes it")
    layers = read_links(links_path)
    src = os.path.join(src_root, "src")
    dirs = sorted(d for d in os.listdir(src) if os.path.isdir(os.path.join(src, d)))

    # Which layer a public header belongs to.
    def header_layer(name):
        if name in dirs:
            return name
        owners = [d for d in dirs if os.path.exists(os.path.join(src, d, name + ".c"))]
        return owners[0] if len(owners) == 1 else None

    # The files to check, with their layer.
    files = []
    for layer in dirs:
        if layer not in layers:
            print(f"layering: src/{layer} has no target yet ({target_of(layer, layers)}): not checked")
            continue
        for root, _, names in os.walk(os.path.join(src, layer)):
            for n in sorted(names):
                if n.endswith((".c", ".h")):
                    files.append((layer, os.path.join(root, n)))
    inc_dir = os.path.join(src_root, "include", "cleanroom")
    problems = []
    for n in sorted(os.listdir(inc_dir)) if os.path.isdir(inc_dir) else []:
        if not n.endswith(".h"):
            continue
        owner = header_layer(n[:-2])
        rel = os.path.relpath(os.path.join(inc_dir, n), src_root)
        if owner is None:
            problems.append(f"{rel}: belongs to no layer: there is no src/{n[:-2]}/ and no single "
                            f"src/<layer>/{n[:-2]}.c; name it after its layer")
        elif owner in layers:
            files.append((owner, os.path.join(inc_dir, n)))

    print("layering: the link lists (" + os.path.relpath(links_path) + "):")
    for layer, l in sorted(layers.items()):
        print(f"  {l['target']:<14} links {' '.join(l['direct']) or '-'}"
              f"{'  (and through them: ' + ' '.join(sorted(l['closure'] - set(l['direct']))) + ')' if l['closure'] - set(l['direct']) else ''}")

    for layer, path in files:
        rel = os.path.relpath(path, src_root)
        allowed = layers[layer]["closure"] | {layer}
        target = layers[layer]["target"]
        with open(path, encoding="utf-8", errors="replace") as f:
            for lineno, line in enumerate(f, 1):
                m = INCLUDE.match(line)
                if not m:
                    continue
                inc = m.group(1)
                if inc in ALWAYS:
                    continue
                if inc.startswith("cleanroom/") and inc.count("/") == 1 and inc.endswith(".h"):
                    need = header_layer(inc[len("cleanroom/"):-2])
                    if need is None:
                        problems.append(f"{rel}:{lineno}: #include \"{inc}\": no layer owns this "
                                        "header (no src/<x>/ or src/<layer>/<x>.c for it)")
                        continue
                elif inc == "cleanroom.pb-c.h":
                    need = "proto"
                elif "/" in inc and inc.split("/", 1)[0] in dirs:
                    need = inc.split("/", 1)[0]
                else:
                    continue  # system or third-party header
                if need in allowed:
                    continue
                links = " ".join(sorted(layers[layer]["closure"])) or "nothing"
                if need not in layers and need != "proto":
                    problems.append(
                        f"{rel}:{lineno}: #include \"{inc}\" is layer {need}, but src/{need} has "
                        f"no target yet ({target_of(need, layers)}), so nothing provides it.")
                    continue
                problems.append(
                    f"{rel}:{lineno}: #include \"{inc}\" is layer {need}, but {target} does not "
                    f"link {target_of(need, layers)} (it links: {links}).\n"
                    f"    Either drop the include or, if the layering allows {layer} -> {need}, add "
                    f"{target_of(need, layers)} to {target}'s link list in CMakeLists.txt.")

    nlayers = len({l for l, _ in files})
    if problems:
        print(f"\nlayering: FAILED: {len(problems)} include(s) the CMake link lists do not allow:",
              file=sys.stderr)
        for p in problems:
            print("  " + p, file=sys.stderr)
        return 1
    print(f"layering: ok: {len(files)} files in {nlayers} layers include only what their targets link")
    return 0


if __name__ == "__main__":
    sys.exit(main())
