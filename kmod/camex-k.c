// SPDX-License-Identifier: GPL-2.0-only
/*
 * camex.ko - a standalone TUN device for the camex tunnel daemon.
 *
 * One character device, /dev/camex, and one network interface, "camex",
 * share a single private state.  Packets the stack routes to "camex" are
 * queued and handed to whoever holds /dev/camex open, one IPv4 packet per
 * read(); each write() of one IPv4 packet is injected into the stack as if
 * it had arrived on "camex".  There is no link-layer header and no packet
 * information prefix: the wire format on the fd is a bare IPv4 packet,
 * which is what the camex daemon reads from and writes to its TUN.
 *
 * It does not depend on tun.ko, so it works on stripped-down embedded
 * kernels built without CONFIG_TUN.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/version.h>
#include <linux/atomic.h>
#include <linux/bitops.h>
#include <linux/fs.h>
#include <linux/if_arp.h>
#include <linux/init.h>
#include <linux/ip.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/netdevice.h>
#include <linux/poll.h>
#include <linux/sched/signal.h>
#include <linux/skbuff.h>
#include <linux/uaccess.h>
#include <linux/wait.h>
#include <net/dst.h>

/*
 * Compatibility block.  Every kernel-version test of this file is here;
 * the code below uses only the camex_* / CAMEX_* names defined in it.
 * The oldest kernel these shims aim at is 4.14 (min_mtu/max_mtu and the
 * void ndo_get_stats64 exist from 4.11 on, so they need no shim).
 */
#if LINUX_VERSION_CODE < KERNEL_VERSION(4, 14, 0)
#error "camex.ko needs Linux 4.14 or newer"
#endif

/* 5.4 renamed nf_reset() and added the lockless emptiness test that
 * poll() and the wait condition use without taking the queue lock. */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(5, 4, 0)
#define camex_nf_reset(skb)		nf_reset_ct(skb)
#define camex_queue_empty(q)		skb_queue_empty_lockless(q)
#else
#define camex_nf_reset(skb)		nf_reset(skb)
#define camex_queue_empty(q)		skb_queue_empty(q)
#endif

/* __poll_t (and the EPOLL* constants poll() returns) arrived in 4.16. */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(4, 16, 0)
typedef __poll_t camex_poll_t;
#define CAMEX_POLL_IN			(EPOLLIN | EPOLLRDNORM)
#define CAMEX_POLL_OUT			(EPOLLOUT | EPOLLWRNORM)
#else
typedef unsigned int camex_poll_t;
#define CAMEX_POLL_IN			(POLLIN | POLLRDNORM)
#define CAMEX_POLL_OUT			(POLLOUT | POLLWRNORM)
#endif
/* End of the compatibility block. */

#define CAMEX_NAME		"camex"
#define CAMEX_MIN_PACKET	sizeof(struct iphdr)	/* 20 bytes */
#define CAMEX_MAX_PACKET	65535			/* IPv4 tot_len limit */
#define CAMEX_MIN_MTU		68			/* RFC 791 */

static unsigned int queue_len = 64;
module_param(queue_len, uint, 0444);
MODULE_PARM_DESC(queue_len,
		 "packets queued for the reader before transmit drops (default 64)");

/* 0600 by default: only root may drive the tunnel.  The old driver made the
 * node world-writable; a wider mode must now be asked for explicitly. */
static ushort dev_mode = 0600;
module_param(dev_mode, ushort, 0444);
MODULE_PARM_DESC(dev_mode, "permission bits of /dev/camex (default 0600)");

struct camex_priv {
	struct net_device *dev;
	/* Packets from the stack waiting for read(); its lock also orders
	 * "attached" against the transmit path. */
	struct sk_buff_head txq;
	wait_queue_head_t readq;
	bool attached;			/* /dev/camex is open (under txq.lock) */
	unsigned long busy;		/* bit 0: the single open slot is taken */

	/* Counters for ndo_get_stats64; written from process and softirq
	 * context, so atomic rather than per-cpu for simplicity. */
	atomic64_t rx_packets, rx_bytes, rx_dropped;
	atomic64_t tx_packets, tx_bytes, tx_dropped;
};

#define CAMEX_BUSY_BIT	0

/* Set once in camex_init() before the device node exists, cleared in
 * camex_exit() after it is gone; the fops reach the state only through it. */
static struct camex_priv *camex_state;

/* ---- network interface side ------------------------------------------ */

static int camex_ndo_open(struct net_device *dev)
{
	netif_start_queue(dev);
	return 0;
}

static int camex_ndo_stop(struct net_device *dev)
{
	netif_stop_queue(dev);
	return 0;
}

/* Called in softirq context (or with BHs off): no sleeping, GFP_ATOMIC only. */
static netdev_tx_t camex_start_xmit(struct sk_buff *skb, struct net_device *dev)
{
	struct camex_priv *priv = netdev_priv(dev);
	unsigned long flags;

	if (skb->protocol != htons(ETH_P_IP)) {
		net_dbg_ratelimited("%s: dropping non-IPv4 packet (proto 0x%04x)\n",
				    dev->name, ntohs(skb->protocol));
		goto drop;
	}

	/* The reader may hold on to the packet for a long time: release the
	 * sender's socket memory, route and conntrack reference now, as
	 * tun.ko does. */
	skb_orphan(skb);
	skb_dst_drop(skb);
	camex_nf_reset(skb);
	skb_tx_timestamp(skb);

	spin_lock_irqsave(&priv->txq.lock, flags);
	if (!priv->attached || skb_queue_len(&priv->txq) >= READ_ONCE(queue_len)) {
		spin_unlock_irqrestore(&priv->txq.lock, flags);
		net_dbg_ratelimited("%s: %s, dropping packet\n", dev->name,
				    priv->attached ? "queue full" : "no reader");
		goto drop;
	}
	__skb_queue_tail(&priv->txq, skb);
	spin_unlock_irqrestore(&priv->txq.lock, flags);

	wake_up_interruptible_poll(&priv->readq, CAMEX_POLL_IN);
	return NETDEV_TX_OK;

drop:
	atomic64_inc(&priv->tx_dropped);
	dev_kfree_skb_any(skb);
	return NETDEV_TX_OK;
}

static void camex_get_stats64(struct net_device *dev,
			      struct rtnl_link_stats64 *stats)
{
	struct camex_priv *priv = netdev_priv(dev);

	stats->rx_packets = atomic64_read(&priv->rx_packets);
	stats->rx_bytes = atomic64_read(&priv->rx_bytes);
	stats->rx_dropped = atomic64_read(&priv->rx_dropped);
	stats->tx_packets = atomic64_read(&priv->tx_packets);
	stats->tx_bytes = atomic64_read(&priv->tx_bytes);
	stats->tx_dropped = atomic64_read(&priv->tx_dropped);
}

static const struct net_device_ops camex_netdev_ops = {
	.ndo_open		= camex_ndo_open,
	.ndo_stop		= camex_ndo_stop,
	.ndo_start_xmit		= camex_start_xmit,
	.ndo_get_stats64	= camex_get_stats64,
};

static void camex_setup(struct net_device *dev)
{
	dev->netdev_ops = &camex_netdev_ops;
	dev->type = ARPHRD_NONE;
	dev->flags = IFF_POINTOPOINT | IFF_NOARP;
	/* No qdisc: our own queue towards the reader is the only buffer, so a
	 * full queue shows up as tx_dropped on this interface. */
	dev->priv_flags |= IFF_NO_QUEUE;
	dev->hard_header_len = 0;
	dev->addr_len = 0;
	dev->mtu = ETH_DATA_LEN;
	dev->min_mtu = CAMEX_MIN_MTU;
	dev->max_mtu = CAMEX_MAX_PACKET;
}

/* ---- character device side ------------------------------------------- */

static int camex_open(struct inode *inode, struct file *file)
{
	struct camex_priv *priv = camex_state;
	unsigned long flags;
	int err;

	if (test_and_set_bit_lock(CAMEX_BUSY_BIT, &priv->busy))
		return -EBUSY;

	err = nonseekable_open(inode, file);
	if (err)
		goto err_release_slot;

	spin_lock_irqsave(&priv->txq.lock, flags);
	priv->attached = true;
	spin_unlock_irqrestore(&priv->txq.lock, flags);

	file->private_data = priv;
	netif_carrier_on(priv->dev);
	return 0;

err_release_slot:
	clear_bit_unlock(CAMEX_BUSY_BIT, &priv->busy);
	return err;
}

static int camex_release(struct inode *inode, struct file *file)
{
	struct camex_priv *priv = file->private_data;
	struct sk_buff_head flushed;
	unsigned long flags;

	/* Detach under the lock so that transmit stops queueing, then free
	 * what was queued outside it (kfree_skb may run destructors). */
	__skb_queue_head_init(&flushed);
	spin_lock_irqsave(&priv->txq.lock, flags);
	priv->attached = false;
	skb_queue_splice_init(&priv->txq, &flushed);
	spin_unlock_irqrestore(&priv->txq.lock, flags);

	atomic64_add(skb_queue_len(&flushed), &priv->tx_dropped);
	__skb_queue_purge(&flushed);

	netif_carrier_off(priv->dev);
	clear_bit_unlock(CAMEX_BUSY_BIT, &priv->busy);
	return 0;
}

static ssize_t camex_read(struct file *file, char __user *buf, size_t count,
			  loff_t *ppos)
{
	struct camex_priv *priv = file->private_data;
	struct sk_buff *skb;
	ssize_t ret;

	for (;;) {
		skb = skb_dequeue(&priv->txq);
		if (skb)
			break;
		if (file->f_flags & O_NONBLOCK)
			return -EAGAIN;
		ret = wait_event_interruptible(priv->readq,
					       !camex_queue_empty(&priv->txq));
		if (ret)
			return ret;	/* a signal: -ERESTARTSYS */
	}

	if (skb->len > count) {
		/* Like a datagram socket would truncate, but silently cutting
		 * an IP packet helps nobody: report it and drop the packet. */
		net_dbg_ratelimited("%s: read buffer %zu < packet %u, dropped\n",
				    priv->dev->name, count, skb->len);
		ret = -EMSGSIZE;
		goto drop;
	}
	/* Without NETIF_F_SG/FRAGLIST the core hands us linear skbs; this is
	 * a no-op then, and a safety net otherwise. */
	if (skb_linearize(skb)) {
		ret = -ENOMEM;
		goto drop;
	}
	if (copy_to_user(buf, skb->data, skb->len)) {
		ret = -EFAULT;
		goto drop;
	}
	ret = skb->len;
	atomic64_inc(&priv->tx_packets);
	atomic64_add(skb->len, &priv->tx_bytes);
	consume_skb(skb);
	return ret;

drop:
	atomic64_inc(&priv->tx_dropped);
	kfree_skb(skb);
	return ret;
}

static ssize_t camex_write(struct file *file, const char __user *buf,
			   size_t count, loff_t *ppos)
{
	struct camex_priv *priv = file->private_data;
	struct net_device *dev = priv->dev;
	struct sk_buff *skb;
	u8 version_ihl;
	unsigned int len;
	int ret;

	/* Validate from user memory before allocating anything, so that
	 * garbage costs no skb. */
	if (count < CAMEX_MIN_PACKET || count > CAMEX_MAX_PACKET)
		return -EINVAL;
	if (get_user(version_ihl, (const u8 __user *)buf))
		return -EFAULT;
	if ((version_ihl >> 4) != 4)
		return -EINVAL;
	if (!(dev->flags & IFF_UP))
		return -EIO;

	skb = alloc_skb(count, GFP_KERNEL);
	if (!skb) {
		atomic64_inc(&priv->rx_dropped);
		return -ENOMEM;
	}
	if (copy_from_user(skb_put(skb, count), buf, count)) {
		kfree_skb(skb);
		return -EFAULT;
	}

	skb->dev = dev;
	skb->protocol = htons(ETH_P_IP);
	skb->pkt_type = PACKET_HOST;
	skb->ip_summed = CHECKSUM_NONE;	/* let the stack verify checksums */
	skb_reset_mac_header(skb);
	skb_reset_network_header(skb);

	/* Deliver synchronously, as tun.ko does, rather than through the
	 * per-CPU backlog of netif_rx(): one softirq round trip less per
	 * packet, and no backlog to overflow.  BHs must be off around it. */
	len = skb->len;
	local_bh_disable();
	ret = netif_receive_skb(skb);
	local_bh_enable();
	if (ret == NET_RX_SUCCESS) {
		atomic64_inc(&priv->rx_packets);
		atomic64_add(len, &priv->rx_bytes);
	} else {
		atomic64_inc(&priv->rx_dropped);
	}
	return count;
}

static camex_poll_t camex_poll(struct file *file, poll_table *wait)
{
	struct camex_priv *priv = file->private_data;
	camex_poll_t mask = CAMEX_POLL_OUT;	/* write() never blocks */

	poll_wait(file, &priv->readq, wait);
	if (!camex_queue_empty(&priv->txq))
		mask |= CAMEX_POLL_IN;
	return mask;
}

static const struct file_operations camex_fops = {
	.owner		= THIS_MODULE,	/* pins the module while open */
	.open		= camex_open,
	.release	= camex_release,
	.read		= camex_read,
	.write		= camex_write,
	.poll		= camex_poll,
	/* no .llseek: nonseekable_open() makes lseek() fail with ESPIPE */
};

static struct miscdevice camex_misc = {
	.minor	= MISC_DYNAMIC_MINOR,
	.name	= CAMEX_NAME,
	.fops	= &camex_fops,
};

/* ---- module load / unload -------------------------------------------- */

static int __init camex_init(void)
{
	struct net_device *dev;
	struct camex_priv *priv;
	int err;

	if (queue_len < 1) {
		pr_err("queue_len must be at least 1\n");
		return -EINVAL;
	}
	if (dev_mode & ~0777) {
		pr_err("dev_mode %#o has bits outside 0777\n", dev_mode);
		return -EINVAL;
	}

	dev = alloc_netdev(sizeof(*priv), CAMEX_NAME, NET_NAME_PREDICTABLE,
			   camex_setup);
	if (!dev)
		return -ENOMEM;
	priv = netdev_priv(dev);
	priv->dev = dev;
	skb_queue_head_init(&priv->txq);
	init_waitqueue_head(&priv->readq);
	/* Nobody reads yet: no carrier until /dev/camex is opened. */
	netif_carrier_off(dev);

	err = register_netdev(dev);
	if (err)
		goto err_free_netdev;

	/* The device node comes last: once it exists, open() may run. */
	camex_state = priv;
	camex_misc.mode = dev_mode;
	err = misc_register(&camex_misc);
	if (err)
		goto err_unregister_netdev;

	pr_info("loaded: /dev/%s mode %04o, interface %s, queue %u\n",
		CAMEX_NAME, dev_mode, dev->name, queue_len);
	return 0;

err_unregister_netdev:
	camex_state = NULL;
	unregister_netdev(dev);
err_free_netdev:
	free_netdev(dev);
	return err;
}

static void __exit camex_exit(void)
{
	struct camex_priv *priv = camex_state;
	struct net_device *dev = priv->dev;

	/*
	 * The reverse of init.  The node goes first; no file can be open
	 * (an open file holds a module reference, so rmmod was refused).
	 * unregister_netdev() then closes the interface and waits for every
	 * transmit in flight, so nothing can queue onto txq afterwards; only
	 * then is the queue purged and the memory freed.
	 */
	misc_deregister(&camex_misc);
	camex_state = NULL;
	unregister_netdev(dev);
	skb_queue_purge(&priv->txq);
	free_netdev(dev);
}

module_init(camex_init);
module_exit(camex_exit);

MODULE_DESCRIPTION("camex standalone TUN device (/dev/camex + camex interface)");
MODULE_AUTHOR("camex developers");
MODULE_LICENSE("GPL");
