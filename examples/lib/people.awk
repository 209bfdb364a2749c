# Shared by the example generators (examples/*/generate.sh): a seeded
# random stream and people's e-mail addresses. Park-Miller "minimal
# standard" generator, not awk's rand(): products stay below 2^53, so the
# arithmetic is exact and every awk (mawk, gawk) draws the same numbers.

function rnd() { state = (state * 16807) % 2147483647; return state / 2147483647 }
function pick(n) { return int(rnd() * n) }
function cap(s) { return toupper(substr(s, 1, 1)) substr(s, 2) }

# Seeds the stream and loads the name and domain lists (indexed from 0).
function people_init(seed,    i) {
  state = seed % 2147483647
  if (state <= 0) state += 2147483646
  nfirst = split("anna ben clara david emma felix greta hannah ivan julia karl lena max nina oscar paula quinn rosa sven tina uwe vera walter xenia yusuf zoe liam mia noah sofia elias lea jonas marie luca ida tom ella finn lina", first, " ")
  nlast = split("mueller schmidt schneider fischer weber meyer wagner becker schulz hoffmann koch richter klein wolf schroeder neumann schwarz braun zimmermann krueger hartmann lange werner krause lehmann koehler maier", last, " ")
  ndomain = split("gmail.com gmail.com gmail.com web.de web.de gmx.de gmx.net outlook.com yahoo.com icloud.com t-online.de posteo.de", domain, " ")
  # split() numbers from 1; pick() from 0: shift the lists down by one.
  for (i = 0; i < nfirst; i++) first[i] = first[i + 1]
  for (i = 0; i < nlast; i++) last[i] = last[i + 1]
  for (i = 0; i < ndomain; i++) domain[i] = domain[i + 1]
}

# One of several usual address shapes; unique across the population.
function make_email(id,    f, l, d, shape, e) {
  f = first[pick(nfirst)]; l = last[pick(nlast)]; d = domain[pick(ndomain)]
  shape = pick(6)
  if (shape == 0) e = f "." l
  else if (shape == 1) e = f l
  else if (shape == 2) e = substr(f, 1, 1) "." l
  else if (shape == 3) e = f "_" l
  else if (shape == 4) e = f "." l (pick(90) + 10)
  else e = f (pick(900) + 100)
  e = e "@" d
  if (e in seen) e = f "." l "." id "@" d
  seen[e] = 1
  return e
}

function shuffle(a, n,    i, j, t) {
  for (i = n; i > 1; i--) { j = pick(i) + 1; t = a[i]; a[i] = a[j]; a[j] = t }
}
