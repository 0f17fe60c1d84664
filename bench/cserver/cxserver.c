/*
 * cxserver - a model, in plain C, of the deployed C server of the legacy
 * protocol (docs/LEGACY.md), for benchmarks: camex's server is compared
 * with it per relayed datagram. We have neither its binary nor its
 * source; this is written from the protocol description and the list of
 * its behaviours and flaws (docs/LEGACY.md sections 5, 6 and 8), and keeps
 * the ones that shape its data path or what clients see:
 *
 *  - one UDP socket, one blocking recvfrom and at most one sendto per
 *    datagram; no batching, no offloads, no threads;
 *  - a fixed table of 256 clients, searched linearly (by endpoint, by
 *    tunnel address); a client beyond it is not served;
 *  - endpoints learnt from the inner source of any accepted DATA, before
 *    the replay check (flaw 1);
 *  - REGISTER is not replay-checked and resets the client's window (flaw 2);
 *  - any key of the key store is good for any client (flaw 3);
 *  - auto clients filed at 0.0.0.0 until their first DATA (flaw 4);
 *  - a random sender prefix per table entry, counter from 0 at each start
 *    (flaw 6);
 *  - a log line for every relayed packet (at info, the default) and for
 *    every discarded datagram, unthrottled (flaw 8).
 *
 * Timers: an entry expires after 120 s without a datagram from it; a
 * REGISTER from the same endpoint within 5 s of the previous one is
 * ignored (so a C client's second start-up REGISTER gets no second CONFIG).
 *
 * Crypto: ChaCha20-Poly1305 (RFC 8439) from OpenSSL's libcrypto EVP; the
 * key is BLAKE2b-256 of the passphrase and the fingerprint BLAKE2b-128 of
 * the key, from libsodium (OpenSSL 3.0's BLAKE2b has a fixed 64-byte
 * output, and a shorter BLAKE2b is not a truncation of it).
 *
 * Command line as camex's server:
 *   cxserver -M server -p PORT [-b ADDR] [-e -k PASS | --psk-file F]
 *            [-f FILE] [--log-level debug|info|warning|error]
 *            [--socket-buffer BYTES]
 * --log-level is the model's knob (the deployed tool's is unknown): at
 * warning the per-packet lines go, the per-drop ones stay.
 * --socket-buffer BYTES (also the model's) sets SO_RCVBUF and SO_SNDBUF;
 * without it the socket keeps the kernel's default, as a plain server's
 * does. A bench that measures loss on a shared machine gives it camex's
 * 4 MiB so that loss says how fast each server is, not how long a
 * scheduling stall its buffer absorbs.
 */

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <sodium.h>

#define MAGIC "CX2P"
#define T_REGISTER 1
#define T_DATA 2
#define T_CONFIG 3
#define HDR_LEN 27
#define TAG_LEN 16
#define KEY_LEN 32

#define MAX_CLIENTS 256
#define MAX_ROUTES 16
#define MAX_ID 31
#define MAX_VALUE 63
#define MAX_LINE 1023
#define IDLE_EXPIRY 120.0
#define REGISTER_HOLDOFF 5.0
#define WINDOW 64

#define DEFAULT_CONFIG "/etc/camex/camex.conf"

/* L_NOTICE: start and stop, printed at every level (the bench waits for them). */
enum { L_DEBUG, L_INFO, L_WARNING, L_ERROR, L_NOTICE };

/* ------------------------------------------------------------ state */

struct profile {               /* a [defaults] or [client ID] section */
	char id[MAX_ID + 1];
	char local_cidr[MAX_VALUE + 1];
	char gateway_ip[MAX_VALUE + 1];
	char routes[MAX_ROUTES][MAX_VALUE + 1];
	int nroutes;
	int mtu;                   /* 0: not set */
	char psk[MAX_VALUE + 1];   /* "": none */
};

struct database {
	struct profile defaults;
	struct profile *clients;
	int nclients;
};

struct client {
	int used;
	uint32_t ip;               /* tunnel address, network order; 0 = auto, not filed yet */
	struct sockaddr_in ep;     /* where the client was last seen */
	unsigned char key[KEY_LEN];/* the key that opened its REGISTER (a copy: flaw 3) */
	unsigned char prefix[4];   /* our sender prefix towards it */
	uint64_t tx_seq;           /* our counter towards it, from 0 */
	int rx_init;               /* its replay window */
	uint64_t rx_top, rx_bitmap;
	double last_seen, last_register;
	char id[MAX_ID + 1];
};

static struct client table[MAX_CLIENTS];
static struct database db;
static unsigned char (*keys)[KEY_LEN]; /* key store: global key, then each psk= */
static int nkeys;
static unsigned char global_key[KEY_LEN];
static int have_global_key;
static int encrypt_mode;
static int log_threshold = L_INFO;
static const char *config_path = DEFAULT_CONFIG;
static int config_given;
static int sock = -1;
static EVP_CIPHER_CTX *seal_ctx, *open_ctx;
static volatile sig_atomic_t want_reload, want_stop;

/* ------------------------------------------------------------ helpers */

static void logmsg(int level, const char *fmt, ...)
{
	static const char *names[] = { "debug", "info", "warning", "error", "notice" };
	char line[1200];
	struct timespec ts;
	va_list ap;
	int n;

	if (level < log_threshold)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	n = snprintf(line, sizeof(line), "%lld.%03ld cxserver %s: ", (long long)ts.tv_sec,
		     ts.tv_nsec / 1000000, names[level]);
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	va_end(ap);
	strcat(line, "\n");
	fputs(line, stderr);  /* stderr is unbuffered: one write per line */
}

static double now_mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static const char *ep_str(const struct sockaddr_in *sa)
{
	static char buf[32];
	char ip[INET_ADDRSTRLEN];

	inet_ntop(AF_INET, &sa->sin_addr, ip, sizeof(ip));
	snprintf(buf, sizeof(buf), "%s:%u", ip, ntohs(sa->sin_port));
	return buf;
}

static const char *ip_str(uint32_t ip, char *buf)
{
	inet_ntop(AF_INET, &ip, buf, INET_ADDRSTRLEN);
	return buf;
}

static uint64_t get_be64(const unsigned char *p)
{
	uint64_t v = 0;
	int i;

	for (i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

static void put_be64(unsigned char *p, uint64_t v)
{
	int i;

	for (i = 7; i >= 0; i--) {
		p[i] = v & 0xff;
		v >>= 8;
	}
}

static void derive_key(const char *pass, unsigned char key[KEY_LEN])
{
	crypto_generichash(key, KEY_LEN, (const unsigned char *)pass, strlen(pass), NULL, 0);
}

static void fingerprint(const unsigned char key[KEY_LEN], char out[33])
{
	unsigned char fp[16];
	int i;

	crypto_generichash(fp, sizeof(fp), key, KEY_LEN, NULL, 0);
	for (i = 0; i < 16; i++)
		sprintf(out + 2 * i, "%02x", fp[i]);
}

/* ------------------------------------------------------------ AEAD */

/* Seal `len` bytes of `pt` into `out` (header already in out[0..26]). */
static int aead_seal(const unsigned char *key, unsigned char *out, const unsigned char *pt, int len)
{
	int n;

	if (EVP_EncryptInit_ex(seal_ctx, EVP_chacha20_poly1305(), NULL, key, out + 5) != 1 ||
	    EVP_EncryptUpdate(seal_ctx, NULL, &n, out, HDR_LEN) != 1 ||
	    EVP_EncryptUpdate(seal_ctx, out + HDR_LEN, &n, pt, len) != 1 ||
	    EVP_EncryptFinal_ex(seal_ctx, out + HDR_LEN + len, &n) != 1 ||
	    EVP_CIPHER_CTX_ctrl(seal_ctx, EVP_CTRL_AEAD_GET_TAG, TAG_LEN, out + HDR_LEN + len) != 1)
		return -1;
	return 0;
}

/* Open datagram `d` (shape already checked, plaintext length `len`) into `pt`. */
static int aead_open(const unsigned char *key, const unsigned char *d, int len, unsigned char *pt)
{
	int n;

	if (EVP_DecryptInit_ex(open_ctx, EVP_chacha20_poly1305(), NULL, key, d + 5) != 1 ||
	    EVP_DecryptUpdate(open_ctx, NULL, &n, d, HDR_LEN) != 1 ||
	    EVP_DecryptUpdate(open_ctx, pt, &n, d + HDR_LEN, len) != 1 ||
	    EVP_CIPHER_CTX_ctrl(open_ctx, EVP_CTRL_AEAD_SET_TAG, TAG_LEN,
				(void *)(d + HDR_LEN + len)) != 1 ||
	    EVP_DecryptFinal_ex(open_ctx, pt + len, &n) != 1)
		return -1;
	return 0;
}

/* ------------------------------------------------------------ configuration */

static void trim(char *s)
{
	char *p = s, *e;

	while (*p == ' ' || *p == '\t')
		p++;
	memmove(s, p, strlen(p) + 1);
	e = s + strlen(s);
	while (e > s && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
		*--e = '\0';
}

static int set_value(char *dst, const char *value)
{
	if (strlen(value) < 1 || strlen(value) > MAX_VALUE)
		return -1;
	strcpy(dst, value);
	return 0;
}

/* Parse FILE into `out`; 0, or -1 after one error line. */
static int load_config(const char *path, struct database *out)
{
	char line[MAX_LINE + 2];
	struct profile *cur = NULL;
	FILE *f;
	int lineno = 0, err = 0;

	memset(out, 0, sizeof(*out));
	f = fopen(path, "r");
	if (!f) {
		logmsg(L_ERROR, "config %s: %s", path, strerror(errno));
		return -1;
	}
	while (!err && fgets(line, sizeof(line), f)) {
		char *eq, *key, *value;

		lineno++;
		trim(line);
		if (line[0] == '\0' || line[0] == '#' || line[0] == ';')
			continue;
		if (line[0] == '[') {
			char *end = strchr(line, ']');

			if (!end || end[1] != '\0') {
				logmsg(L_ERROR, "config %s:%d: bad section line", path, lineno);
				err = 1;
			} else if (strcmp(line, "[defaults]") == 0) {
				cur = &out->defaults;
			} else if (strncasecmp(line + 1, "client ", 7) == 0 && end - line - 8 >= 1 &&
				   end - line - 8 <= MAX_ID) {
				struct profile *p = realloc(out->clients, (out->nclients + 1) * sizeof(*p));

				if (!p) {
					logmsg(L_ERROR, "config: out of memory");
					err = 1;
					break;
				}
				out->clients = p;
				cur = &p[out->nclients++];
				memset(cur, 0, sizeof(*cur));
				memcpy(cur->id, line + 8, end - line - 8);
			} else {
				logmsg(L_ERROR, "config %s:%d: unknown section %s", path, lineno, line);
				err = 1;
			}
			continue;
		}
		eq = strchr(line, '=');
		if (!eq) {
			logmsg(L_ERROR, "config %s:%d: no '=' in line", path, lineno);
			err = 1;
			break;
		}
		if (!cur) {
			logmsg(L_ERROR, "config %s:%d: key before any section", path, lineno);
			err = 1;
			break;
		}
		*eq = '\0';
		key = line;
		value = eq + 1;
		trim(key);
		trim(value);
		if (strcmp(key, "local_cidr") == 0) {
			err = set_value(cur->local_cidr, value);
		} else if (strcmp(key, "gateway_ip") == 0) {
			err = set_value(cur->gateway_ip, value);
		} else if (strcmp(key, "route_cidr") == 0) {
			if (cur->nroutes >= MAX_ROUTES) {
				logmsg(L_WARNING, "config %s:%d: more than %d routes, ignored", path,
				       lineno, MAX_ROUTES);
				continue;
			}
			err = set_value(cur->routes[cur->nroutes++], value);
		} else if (strcmp(key, "mtu") == 0) {
			cur->mtu = atoi(value);
			if (cur->mtu < 576 || cur->mtu > 9000) {
				logmsg(L_ERROR, "config %s:%d: mtu %s not in 576..9000", path, lineno, value);
				err = 1;
				break;
			}
		} else if (strcmp(key, "psk") == 0 && cur != &out->defaults) {
			err = set_value(cur->psk, value);
		} else {
			logmsg(L_WARNING, "config %s:%d: unknown key %s, ignored", path, lineno, key);
		}
		if (err)
			logmsg(L_ERROR, "config %s:%d: bad value for %s", path, lineno, key);
	}
	fclose(f);
	if (err) {
		free(out->clients);
		memset(out, 0, sizeof(*out));
		return -1;
	}
	return 0;
}

/* The key store: the global key (with -e), then each section's psk=. */
static int build_keys(void)
{
	unsigned char (*k)[KEY_LEN];
	int i, n = 0;

	k = malloc((db.nclients + 1) * KEY_LEN);
	if (!k)
		return -1;
	if (have_global_key)
		memcpy(k[n++], global_key, KEY_LEN);
	for (i = 0; i < db.nclients; i++)
		if (db.clients[i].psk[0])
			derive_key(db.clients[i].psk, k[n++]);
	free(keys);
	keys = k;
	nkeys = n;
	return 0;
}

static const struct profile *find_profile(const char *id)
{
	int i;

	for (i = 0; i < db.nclients; i++)
		if (strcasecmp(db.clients[i].id, id) == 0)
			return &db.clients[i];
	return NULL;
}

/* ------------------------------------------------------------ client table */

static struct client *find_by_endpoint(const struct sockaddr_in *sa)
{
	int i;

	for (i = 0; i < MAX_CLIENTS; i++)
		if (table[i].used && table[i].ep.sin_addr.s_addr == sa->sin_addr.s_addr &&
		    table[i].ep.sin_port == sa->sin_port)
			return &table[i];
	return NULL;
}

/* The first entry with tunnel address `ip` (0.0.0.0 finds an auto client
 * not filed yet: flaw 4). */
static struct client *find_by_ip(uint32_t ip)
{
	int i;

	for (i = 0; i < MAX_CLIENTS; i++)
		if (table[i].used && table[i].ip == ip)
			return &table[i];
	return NULL;
}

static struct client *alloc_client(void)
{
	int i;

	for (i = 0; i < MAX_CLIENTS; i++)
		if (!table[i].used) {
			memset(&table[i], 0, sizeof(table[i]));
			table[i].used = 1;
			if (getrandom(table[i].prefix, sizeof(table[i].prefix), 0) != 4)
				return NULL;
			return &table[i];
		}
	return NULL;
}

static void expire_clients(double now)
{
	char ip[INET_ADDRSTRLEN];
	int i;

	for (i = 0; i < MAX_CLIENTS; i++)
		if (table[i].used && now - table[i].last_seen >= IDLE_EXPIRY) {
			logmsg(L_INFO, "client %s (%s) expired", ip_str(table[i].ip, ip),
			       ep_str(&table[i].ep));
			table[i].used = 0;
		}
}

/* The C client's window: highest accepted and a 64-bit bitmap below it. */
static int replay_accept(struct client *c, uint64_t seq)
{
	uint64_t off;

	if (!c->rx_init) {
		c->rx_init = 1;
		c->rx_top = seq;
		c->rx_bitmap = 1;
		return 1;
	}
	if (seq > c->rx_top) {
		off = seq - c->rx_top;
		c->rx_bitmap = off >= WINDOW ? 1 : (c->rx_bitmap << off) | 1;
		c->rx_top = seq;
		return 1;
	}
	off = c->rx_top - seq;
	if (off >= WINDOW || (c->rx_bitmap >> off) & 1)
		return 0;
	c->rx_bitmap |= (uint64_t)1 << off;
	return 1;
}

/* ------------------------------------------------------------ sending */

static unsigned char txbuf[65536 + HDR_LEN + TAG_LEN];

static void send_to(struct client *c, int type, const unsigned char *pt, int len)
{
	const unsigned char *out = pt;
	int outlen = len;

	if (encrypt_mode) {
		memcpy(txbuf, MAGIC, 4);
		txbuf[4] = type;
		memcpy(txbuf + 5, c->prefix, 4);
		put_be64(txbuf + 9, c->tx_seq);
		txbuf[17] = len >> 8;
		txbuf[18] = len & 0xff;
		put_be64(txbuf + 19, c->tx_seq);
		c->tx_seq++;
		if (aead_seal(c->key, txbuf, pt, len) < 0) {
			logmsg(L_ERROR, "encryption failed");
			return;
		}
		out = txbuf;
		outlen = len + HDR_LEN + TAG_LEN;
	}
	/* Errors (ICMP unreachable from a client gone) are ignored, as a
	 * datagram tunnel does. */
	sendto(sock, out, outlen, 0, (const struct sockaddr *)&c->ep, sizeof(c->ep));
}

static void drop(const struct sockaddr_in *from, const char *why)
{
	logmsg(L_WARNING, "dropped datagram from %s: %s", ep_str(from), why);
}

/* ------------------------------------------------------------ messages */

/* " KEY=value" after text[0..n-1] if it fits in a control line (with its
 * newline); the new length. */
static int append(char *text, int n, const char *key, const char *fmt, ...)
{
	char value[MAX_VALUE + 1];
	va_list ap;
	int k;

	va_start(ap, fmt);
	vsnprintf(value, sizeof(value), fmt, ap);
	va_end(ap);
	k = strlen(key) + strlen(value) + 2;
	if (n + k + 1 > MAX_LINE)
		return n;
	return n + sprintf(text + n, " %s=%s", key, value);
}

static void send_config(struct client *c, const char *id, const struct profile *p)
{
	const struct profile *d = &db.defaults;
	char text[MAX_LINE + 1];
	int n, i, mtu = p->mtu ? p->mtu : d->mtu;
	const char *local = p->local_cidr[0] ? p->local_cidr : d->local_cidr;
	const char *gw = p->gateway_ip[0] ? p->gateway_ip : d->gateway_ip;
	int routes = 0;

	n = snprintf(text, sizeof(text), "CX2P CONFIG CLIENT_ID=%s", id);
	if (mtu)
		n = append(text, n, "MTU", "%d", mtu);
	if (local[0])
		n = append(text, n, "LOCAL_CIDR", "%s", local);
	if (gw[0])
		n = append(text, n, "GATEWAY_IP", "%s", gw);
	for (i = 0; i < d->nroutes && routes < MAX_ROUTES; i++, routes++)
		n = append(text, n, "ROUTE_CIDR", "%s", d->routes[i]);
	for (i = 0; i < p->nroutes && routes < MAX_ROUTES; i++, routes++)
		n = append(text, n, "ROUTE_CIDR", "%s", p->routes[i]);
	text[n++] = '\n';
	send_to(c, T_CONFIG, (const unsigned char *)text, n);
}

/* REGISTER: manual (MODE=MANUAL LOCAL_IP=, or the bare address) or auto
 * (MODE=AUTO CLIENT_ID=). `key` opened it (NULL in plaintext mode). */
static void on_register(const unsigned char *msg, int len, const struct sockaddr_in *from,
			const unsigned char *key, double now)
{
	char text[MAX_LINE + 1], *tok, *save = NULL;
	char ipbuf[INET_ADDRSTRLEN];
	const char *mode = NULL, *local_ip = NULL, *client_id = NULL, *bare = NULL;
	const struct profile *prof = NULL;
	struct client *c;
	struct in_addr addr;
	int auto_mode, i, found_by_ep;

	if (len > MAX_LINE || len < 1 || msg[len - 1] != '\n') {
		drop(from, "bad control message");
		return;
	}
	memcpy(text, msg, len - 1);
	text[len - 1] = '\0';
	if (!(tok = strtok_r(text, " ", &save)) || strcmp(tok, "CX2P") != 0 ||
	    !(tok = strtok_r(NULL, " ", &save)) || strcmp(tok, "REGISTER") != 0) {
		drop(from, "unexpected control message");
		return;
	}
	for (i = 0; (tok = strtok_r(NULL, " ", &save)) != NULL; i++) {
		if (strncmp(tok, "MODE=", 5) == 0)
			mode = tok + 5;
		else if (strncmp(tok, "LOCAL_IP=", 9) == 0)
			local_ip = tok + 9;
		else if (strncmp(tok, "CLIENT_ID=", 10) == 0)
			client_id = tok + 10;
		else if (i == 0 && !strchr(tok, '='))
			bare = tok;
	}
	auto_mode = mode && strcmp(mode, "AUTO") == 0;
	if (auto_mode) {
		if (!client_id || strlen(client_id) < 1 || strlen(client_id) > MAX_ID) {
			drop(from, "REGISTER without a valid CLIENT_ID");
			return;
		}
		prof = find_profile(client_id);
		if (!prof) {
			logmsg(L_WARNING, "dropped datagram from %s: unknown client ID %s",
			       ep_str(from), client_id);
			return;
		}
		addr.s_addr = 0;
	} else {
		if (!local_ip)
			local_ip = bare;
		if (!local_ip || inet_pton(AF_INET, local_ip, &addr) != 1 || addr.s_addr == 0) {
			drop(from, "REGISTER without a valid LOCAL_IP");
			return;
		}
	}

	c = find_by_endpoint(from);
	found_by_ep = c != NULL;
	if (c && now - c->last_register < REGISTER_HOLDOFF) {
		c->last_seen = now;
		return;  /* a repeat within 5 s: ignored */
	}
	if (!c)  /* the same address (auto: 0.0.0.0) from a new port takes its entry */
		c = find_by_ip(addr.s_addr);
	if (!c)
		c = alloc_client();
	if (!c) {
		drop(from, "client table full");
		return;
	}
	if (!auto_mode || !found_by_ep)
		c->ip = addr.s_addr;
	c->ep = *from;
	if (key)
		memcpy(c->key, key, KEY_LEN);
	c->last_seen = c->last_register = now;
	c->rx_init = 0;  /* flaw 2: a REGISTER resets the replay window */
	if (auto_mode) {
		snprintf(c->id, sizeof(c->id), "%s", client_id);
		logmsg(L_INFO, "client %s registered from %s (auto, filed at %s)", client_id,
		       ep_str(from), ip_str(c->ip, ipbuf));
		send_config(c, client_id, prof);
	} else {
		c->id[0] = '\0';
		logmsg(L_INFO, "client %s registered from %s (manual)", ip_str(c->ip, ipbuf),
		       ep_str(from));
	}
}

/* DATA: an inner IPv4 packet. `has_seq`: encrypted, `seq` for the window. */
static void on_data(const unsigned char *pkt, int len, const struct sockaddr_in *from,
		    int has_seq, uint64_t seq, double now)
{
	char a[INET_ADDRSTRLEN], b[INET_ADDRSTRLEN];
	struct client *by_ep, *src, *dst;
	uint32_t sip, dip;

	if (len < 20 || (pkt[0] >> 4) != 4) {
		drop(from, "not an IPv4 packet");
		return;
	}
	memcpy(&sip, pkt + 12, 4);
	memcpy(&dip, pkt + 16, 4);
	by_ep = find_by_endpoint(from);
	if (by_ep && by_ep->ip == 0) {  /* flaw 4: an auto client is filed now */
		by_ep->ip = sip;
		logmsg(L_INFO, "auto client %s filed at %s", by_ep->id, ip_str(sip, a));
	}
	src = find_by_ip(sip);
	if (!src) {
		logmsg(L_WARNING, "dropped datagram from %s: no client %s", ep_str(from),
		       ip_str(sip, a));
		return;
	}
	src->ep = *from;  /* flaw 1: learnt from the packet, before the replay check */
	src->last_seen = now;
	if (has_seq && !replay_accept(src, seq)) {
		drop(from, "replayed packet");
		return;
	}
	dst = find_by_ip(dip);
	if (!dst) {
		logmsg(L_WARNING, "dropped datagram from %s: no client for %s", ep_str(from),
		       ip_str(dip, a));
		return;
	}
	send_to(dst, T_DATA, pkt, len);
	logmsg(L_INFO, "%s -> %s %d bytes", ip_str(sip, a), ip_str(dip, b), len);  /* flaw 8 */
}

static unsigned char ptbuf[65536];

static void on_encrypted(const unsigned char *d, int n, const struct sockaddr_in *from, double now)
{
	struct client *c;
	const unsigned char *key = NULL;
	int len, i;

	if (n < HDR_LEN + TAG_LEN || memcmp(d, MAGIC, 4) != 0 ||
	    n != (len = (d[17] << 8) | d[18]) + HDR_LEN + TAG_LEN) {
		drop(from, "malformed datagram");
		return;
	}
	/* A known endpoint's key, else every key of the store in turn. */
	c = find_by_endpoint(from);
	if (c) {
		if (aead_open(c->key, d, len, ptbuf) == 0)
			key = c->key;
	} else {
		for (i = 0; i < nkeys && !key; i++)
			if (aead_open(keys[i], d, len, ptbuf) == 0)
				key = keys[i];
	}
	if (!key) {
		drop(from, "authentication failed");
		return;
	}
	switch (d[4]) {
	case T_REGISTER:
		on_register(ptbuf, len, from, key, now);
		break;
	case T_DATA:
		on_data(ptbuf, len, from, 1, get_be64(d + 19), now);
		break;
	default:
		drop(from, "unexpected message type");
	}
}

static void on_plaintext(const unsigned char *d, int n, const struct sockaddr_in *from, double now)
{
	if (n >= 4 && memcmp(d, MAGIC, 4) == 0)
		on_register(d, n, from, NULL, now);
	else
		on_data(d, n, from, 0, 0, now);
}

/* ------------------------------------------------------------ main */

static void on_signal(int sig)
{
	if (sig == SIGHUP)
		want_reload = 1;
	else
		want_stop = 1;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: cxserver -M server -p PORT [-b ADDR] [-e -k PASS | --psk-file FILE]\n"
		   "                [-f FILE] [--log-level debug|info|warning|error]\n"
		   "                [--socket-buffer BYTES]\n"
		   "a model of the deployed C server of camex's legacy protocol, for benchmarks\n");
}

static int read_psk_file(const char *path, char *out)
{
	FILE *f = fopen(path, "r");
	char line[256];

	if (!f || !fgets(line, sizeof(line), f)) {
		fprintf(stderr, "cxserver: --psk-file %s: %s\n", path, f ? "empty" : strerror(errno));
		if (f)
			fclose(f);
		return -1;
	}
	fclose(f);
	line[strcspn(line, "\r\n")] = '\0';
	if (strlen(line) < 1 || strlen(line) > MAX_VALUE) {
		fprintf(stderr, "cxserver: --psk-file %s: the passphrase must be 1 to 63 bytes\n", path);
		return -1;
	}
	memcpy(out, line, strlen(line) + 1);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "mode", required_argument, NULL, 'M' },
		{ "port", required_argument, NULL, 'p' },
		{ "bind-ip", required_argument, NULL, 'b' },
		{ "encrypt", no_argument, NULL, 'e' },
		{ "psk", required_argument, NULL, 'k' },
		{ "psk-file", required_argument, NULL, 'K' },
		{ "config", required_argument, NULL, 'f' },
		{ "log-level", required_argument, NULL, 'L' },
		{ "socket-buffer", required_argument, NULL, 'B' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	static unsigned char rxbuf[65536];
	struct sockaddr_in bind_addr, from;
	struct sigaction sa;
	struct timeval tv = { 1, 0 };
	char psk[MAX_VALUE + 2] = "", fp[33];
	const char *mode = NULL, *env;
	double now, next_sweep;
	long port = -1;
	int sockbuf = 0;
	int opt;

	memset(&bind_addr, 0, sizeof(bind_addr));
	bind_addr.sin_family = AF_INET;
	while ((opt = getopt_long(argc, argv, "M:p:b:ek:f:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'M':
			mode = optarg;
			break;
		case 'p': {
			char *end;

			port = strtol(optarg, &end, 10);
			if (*end || port < 1 || port > 65535) {
				fprintf(stderr, "cxserver: -p/--port: %s is not a port (1..65535)\n", optarg);
				return 1;
			}
			break;
		}
		case 'b':
			if (inet_pton(AF_INET, optarg, &bind_addr.sin_addr) != 1) {
				fprintf(stderr, "cxserver: -b/--bind-ip: %s is not an IPv4 address\n", optarg);
				return 1;
			}
			break;
		case 'e':
			encrypt_mode = 1;
			break;
		case 'k':
			snprintf(psk, sizeof(psk), "%s", optarg);
			break;
		case 'K':
			if (read_psk_file(optarg, psk) < 0)
				return 1;
			break;
		case 'f':
			config_path = optarg;
			config_given = 1;
			break;
		case 'L':
			if (strcmp(optarg, "debug") == 0)
				log_threshold = L_DEBUG;
			else if (strcmp(optarg, "info") == 0)
				log_threshold = L_INFO;
			else if (strcmp(optarg, "warning") == 0)
				log_threshold = L_WARNING;
			else if (strcmp(optarg, "error") == 0)
				log_threshold = L_ERROR;
			else {
				fprintf(stderr, "cxserver: --log-level: %s is not debug, info, warning or error\n",
					optarg);
				return 1;
			}
			break;
		case 'B': {
			char *end;
			long v = strtol(optarg, &end, 10);

			if (*end || v < 4096 || v > (1L << 30)) {
				fprintf(stderr, "cxserver: --socket-buffer: %s is not 4096..1073741824 bytes\n",
					optarg);
				return 1;
			}
			sockbuf = v;
			break;
		}
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "cxserver: unexpected argument %s\n", argv[optind]);
		return 1;
	}
	if (!mode || strcmp(mode, "server") != 0) {
		fprintf(stderr, "cxserver: -M/--mode: only 'server' (this is the server model)\n");
		return 1;
	}
	if (port < 0) {
		fprintf(stderr, "cxserver: -p/--port is required\n");
		return 1;
	}
	if (!psk[0] && (env = getenv("CAMEX_PSK")) != NULL)
		snprintf(psk, sizeof(psk), "%s", env);
	if (psk[0] && (strlen(psk) > MAX_VALUE)) {
		fprintf(stderr, "cxserver: the passphrase must be 1 to 63 bytes\n");
		return 1;
	}
	if (encrypt_mode && !psk[0]) {
		fprintf(stderr, "cxserver: -e/--encrypt needs a passphrase (-k, --psk-file or CAMEX_PSK)\n");
		return 1;
	}
	if (sodium_init() < 0) {
		fprintf(stderr, "cxserver: libsodium failed to start\n");
		return 1;
	}
	if (encrypt_mode) {
		derive_key(psk, global_key);
		have_global_key = 1;
		fingerprint(global_key, fp);
		logmsg(L_NOTICE, "encryption on, key fingerprint %s", fp);
	}
	if (load_config(config_path, &db) < 0) {
		if (config_given)
			return 1;
		logmsg(L_INFO, "no client database: auto clients are not served");
	}
	if (build_keys() < 0)
		return 1;
	seal_ctx = EVP_CIPHER_CTX_new();
	open_ctx = EVP_CIPHER_CTX_new();
	if (!seal_ctx || !open_ctx)
		return 1;

	sock = socket(AF_INET, SOCK_DGRAM, 0);
	bind_addr.sin_port = htons(port);
	if (sock < 0 || bind(sock, (struct sockaddr *)&bind_addr, sizeof(bind_addr)) < 0) {
		logmsg(L_ERROR, "cannot bind UDP port %ld: %s", port, strerror(errno));
		return 1;
	}
	if (sockbuf) {
		setsockopt(sock, SOL_SOCKET, SO_RCVBUF, &sockbuf, sizeof(sockbuf));
		setsockopt(sock, SOL_SOCKET, SO_SNDBUF, &sockbuf, sizeof(sockbuf));
	}
	/* Wake up every second for the idle sweep. */
	setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;  /* no SA_RESTART: recvfrom returns EINTR */
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	logmsg(L_NOTICE, "listening on %s (%s, %d clients in the database, %d keys)",
	       ep_str(&bind_addr), encrypt_mode ? "encrypted" : "plaintext", db.nclients, nkeys);

	next_sweep = now_mono() + 1.0;
	while (!want_stop) {
		socklen_t fromlen = sizeof(from);
		ssize_t n = recvfrom(sock, rxbuf, sizeof(rxbuf), 0, (struct sockaddr *)&from, &fromlen);

		now = now_mono();
		if (want_reload) {
			struct database fresh;

			want_reload = 0;
			/* A bad file leaves an empty database; entries already
			 * made keep their keys (flaw 3). */
			if (load_config(config_path, &fresh) < 0)
				logmsg(L_ERROR, "reload failed: no client database");
			free(db.clients);
			db = fresh;
			build_keys();
			logmsg(L_INFO, "reloaded %s: %d clients", config_path, db.nclients);
		}
		if (now >= next_sweep) {
			expire_clients(now);
			next_sweep = now + 1.0;
		}
		if (n < 0 || fromlen != sizeof(from) || from.sin_family != AF_INET)
			continue;
		if (encrypt_mode)
			on_encrypted(rxbuf, n, &from, now);
		else
			on_plaintext(rxbuf, n, &from, now);
	}
	logmsg(L_NOTICE, "stopping");
	close(sock);
	return 0;
}
