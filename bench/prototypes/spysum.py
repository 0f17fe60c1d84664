import sys, collections
# raw (collapsed) format: "frame;frame;... count"; summarize self time by leaf function and total by function
for fn in sys.argv[1:]:
    self_t = collections.Counter(); tot = collections.Counter(); n = 0
    for line in open(fn):
        stack, _, c = line.rstrip().rpartition(" ")
        c = int(c); n += c
        frames = stack.split(";")
        self_t[frames[-1].split(" (")[0]] += c
        for f in set(x.split(" (")[0] for x in frames): tot[f] += c
    print("==", fn, n, "samples")
    print(" self:", ", ".join(f"{k} {100*v/n:.0f}%" for k, v in self_t.most_common(8)))
    print(" total:", ", ".join(f"{k} {100*v/n:.0f}%" for k, v in tot.most_common(12)))
