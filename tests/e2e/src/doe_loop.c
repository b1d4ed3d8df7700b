// SPDX-License-Identifier: GPL-2.0
/*
 * doe_loop.ko - test helper for the cfgaudit e2e (NOT part of any kernel).
 *
 * Makes the guest kernel run DOE (PCIe Data Object Exchange) exchanges on the
 * emulated CXL type-3 device whenever the test asks, through the kernel's own
 * DOE code, so that cfgaudit's DOE probes can be checked against exchanges of
 * known number, protocol and size.
 *
 * Device: the first PCI device of class 0x050210 (CXL memory device), or
 * bdf=DDDD:BB:DD.F.  Parameters (/sys/module/doe_loop/parameters/):
 *
 *   run     (write-only)  "VENDOR TYPE REQUEST_DWORDS COUNT" (decimal or 0x..)
 *           runs COUNT exchanges one after the other, synchronously, in the
 *           writer's context; each one's request payload is REQUEST_DWORDS
 *           zeroed dwords (so for discovery, vendor 1 type 0, dword 0 asks
 *           for index 0).  Each exchange logs one line
 *             doe_loop: exchange N vid=0x%04x type=%u req=%zu bytes rv=%d
 *           (N counts from 1 over the module's life, rv = bytes received or
 *           -errno).  The write returns 0 or the first exchange's error
 *           (all COUNT exchanges are still attempted, unless a fatal signal
 *           or the loss of the mailbox stops the run).  REQUEST_DWORDS may be
 *           0..262144; the kernel itself refuses (-EIO) more than 262142
 *           (2 header dwords + payload <= 2^18, drivers/pci/doe.c).
 *           The sysfs write holds the module's parameter lock: reading
 *           made/last_rv/last_ns blocks until the run ends.
 *   made    (read-only)   exchanges run so far (total, whatever their rv)
 *   last_rv (read-only)   rv of the last exchange
 *   last_ns (read-only)   duration of the last exchange (ktime, ns)
 *   bdf     (read-only, load time) device to use
 *
 * Linux >= 6.4: pci_find_doe_mailbox() + pci_doe() on the mailbox the PCI core
 *   created at enumeration.  Nothing happens at load: no register access,
 *   no exchange.
 *
 * Linux 6.0-6.3 (Debian 12's 6.1): task API.  Mailbox objects belong to the
 *   bound driver (cxl_pci keeps them private), so at load this module creates
 *   its OWN mailbox object on the device's first DOE capability with
 *   pcim_doe_create_mb().  That call, in the insmod context, resets the
 *   mailbox (pci_doe_abort(): Control = ABORT, then status polls) and runs the
 *   kernel's discovery exchanges (vid 0x0001 type 0, 4-byte request, one per
 *   listed protocol: two on QEMU 7.2's cxl-type3, which lists discovery and
 *   CXL CDAT) on a new ordered workqueue named "<driver> <bdf> DOE [<cap>]"
 *   (e.g. "cxl_pci 0000:0d:00.0 DOE [190]", the same name as cxl_pci's own).
 *   Those load-time exchanges are the kernel's, not counted in `made`.
 *   Each task's ->complete is the kernel's own static pci_doe_task_complete()
 *   (found once at load through a temporary kprobe), with ->private = a
 *   completion, exactly as the kernel's pci_doe_discovery() does, so probes
 *   on that function see this module's exchanges too.
 *   The mailbox object is devres of the device (needs a bound driver: devres
 *   on an unbound device would make the next probe fail with "Resources
 *   present before probing"); it sits in its own devres group, released at
 *   rmmod (no register access) or, if cxl_pci unbinds first, with the
 *   driver's resources.  This module's mailbox and cxl_pci's are distinct
 *   objects on the same registers: do not run exchanges while cxl_pci/cxl_port
 *   run theirs (CDAT at bind).
 */
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/version.h>
#include <linux/pci.h>
#include <linux/pci-doe.h>
#include <linux/device.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/mm.h>
#include <linux/ktime.h>
#include <linux/sched/signal.h>
#include <linux/completion.h>
#include <linux/err.h>

#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 4, 0)
#define DOE_LOOP_TASK_API 1
#include <linux/kprobes.h>
#include <linux/kallsyms.h>
#endif

#ifndef PCI_EXT_CAP_ID_DOE
#define PCI_EXT_CAP_ID_DOE 0x2E
#endif
#define DOE_LOOP_CLASS_CXL_MEM	0x050210
#define DOE_LOOP_MAX_DWORDS	(1U << 18)	/* 1 MiB request */
#define DOE_LOOP_RSP_DWORDS	64		/* >= 4 dwords as asked */

static char *bdf;
module_param(bdf, charp, 0444);
MODULE_PARM_DESC(bdf, "PCI device DDDD:BB:DD.F (default: first device of class 0x050210)");

static unsigned long made;
module_param(made, ulong, 0444);
MODULE_PARM_DESC(made, "exchanges run so far");

static int last_rv;
module_param(last_rv, int, 0444);
MODULE_PARM_DESC(last_rv, "rv of the last exchange (bytes received or -errno)");

static unsigned long long last_ns;
module_param(last_ns, ullong, 0444);
MODULE_PARM_DESC(last_ns, "duration of the last exchange in ns");

static struct pci_dev *doe_pdev;
static u16 doe_cap;
static DEFINE_MUTEX(run_lock);	/* one run at a time; guards the mailbox */
static bool doe_ready;

#ifdef DOE_LOOP_TASK_API
static struct pci_doe_mb *doe_mb;	/* ours, NULL once released */
static void (*kernel_task_complete)(struct pci_doe_task *task);
static int doe_loop_group;		/* address = devres group id */

/*
 * Address of a static kernel function: a kprobe resolves the name through
 * kallsyms; kp.addr may sit past an ENDBR (IBT kernels), so take the offset
 * back off as sprint_symbol() reports it and check the result is +0x0.
 */
static void *doe_loop_lookup(const char *name)
{
	struct kprobe kp = { .symbol_name = name };
	char buf[KSYM_SYMBOL_LEN];
	size_t len = strlen(name);
	unsigned long addr, off = 0;
	int rc;

	rc = register_kprobe(&kp);
	if (rc)
		return ERR_PTR(rc);
	addr = (unsigned long)kp.addr;
	unregister_kprobe(&kp);

	sprint_symbol(buf, addr);
	if (strncmp(buf, name, len) || buf[len] != '+' ||
	    sscanf(buf + len, "+%lx/", &off) != 1)
		return ERR_PTR(-ENOENT);
	addr -= off;
	sprint_symbol(buf, addr);
	if (strncmp(buf, name, len) || strncmp(buf + len, "+0x0/", 5))
		return ERR_PTR(-ENOENT);
	return (void *)addr;
}

/* devres action, last added so first run when the bound driver unbinds */
static void doe_loop_mb_gone(void *data)
{
	mutex_lock(&run_lock);
	if (doe_mb)
		pr_info("doe_loop: %s unbinding: own DOE mailbox object released\n",
			pci_name(doe_pdev));
	doe_mb = NULL;
	mutex_unlock(&run_lock);
}

static int doe_loop_create_mb(void)
{
	struct device *dev = &doe_pdev->dev;
	struct pci_doe_mb *mb;
	int rc = 0;

	device_lock(dev);
	if (!dev->driver) {
		pr_err("doe_loop: %s has no driver bound (cxl_pci): on this kernel the DOE mailbox object is devres of the bound driver; bind it first\n",
		       pci_name(doe_pdev));
		rc = -ENODEV;
		goto out;
	}
	if (!devres_open_group(dev, &doe_loop_group, GFP_KERNEL)) {
		rc = -ENOMEM;
		goto out;
	}
	pr_info("doe_loop: %s: creating own DOE mailbox object at cap %#x (kernel resets it with ABORT and runs discovery exchanges)\n",
		pci_name(doe_pdev), doe_cap);
	mb = pcim_doe_create_mb(doe_pdev, doe_cap);
	if (IS_ERR(mb)) {
		rc = PTR_ERR(mb);
		pr_err("doe_loop: pcim_doe_create_mb(%s, %#x) failed: %d\n",
		       pci_name(doe_pdev), doe_cap, rc);
		devres_release_group(dev, &doe_loop_group);
		goto out;
	}
	rc = devm_add_action(dev, doe_loop_mb_gone, NULL);
	if (rc) {
		devres_release_group(dev, &doe_loop_group);
		goto out;
	}
	devres_close_group(dev, &doe_loop_group);
	doe_mb = mb;
out:
	device_unlock(dev);
	return rc;
}

static void doe_loop_release_mb(void)
{
	struct device *dev = &doe_pdev->dev;
	bool mine;

	device_lock(dev);	/* excludes a concurrent unbind */
	mutex_lock(&run_lock);
	mine = doe_mb != NULL;
	doe_mb = NULL;
	mutex_unlock(&run_lock);
	if (mine)	/* flush + destroy workqueue + free, no register access */
		devres_release_group(dev, &doe_loop_group);
	device_unlock(dev);
}

static int doe_loop_exchange(u16 vid, u8 type, void *req, size_t req_sz,
			     void *rsp, size_t rsp_sz)
{
	DECLARE_COMPLETION_ONSTACK(c);
	struct pci_doe_task task = {	/* on the stack, as the task API wants */
		.prot.vid = vid,
		.prot.type = type,
		.request_pl = req,
		.request_pl_sz = req_sz,
		.response_pl = rsp,
		.response_pl_sz = rsp_sz,
		.complete = kernel_task_complete,
		.private = &c,
	};
	int rc;

	if (!doe_mb)
		return -ENODEV;
	rc = pci_doe_submit_task(doe_mb, &task);
	if (rc)
		return rc;
	wait_for_completion(&c);
	return task.rv;
}
#else /* >= 6.4 */
static int doe_loop_exchange(u16 vid, u8 type, void *req, size_t req_sz,
			     void *rsp, size_t rsp_sz)
{
	struct pci_doe_mb *mb;

	mb = pci_find_doe_mailbox(doe_pdev, vid, type);
	if (!mb)	/* protocol not listed: let pci_doe() refuse it (-EINVAL) */
		mb = pci_find_doe_mailbox(doe_pdev, PCI_VENDOR_ID_PCI_SIG, 0);
	if (!mb)
		return -ENODEV;
	return pci_doe(mb, vid, type, req, req_sz, rsp, rsp_sz);
}
#endif

static int run_set(const char *val, const struct kernel_param *kp)
{
	int vid, type, ndw, count, i, first = 0;
	size_t req_sz;
	void *req, *rsp;

	if (sscanf(val, "%i %i %i %i", &vid, &type, &ndw, &count) != 4 ||
	    vid < 0 || vid > 0xffff || type < 0 || type > 0xff ||
	    ndw < 0 || ndw > DOE_LOOP_MAX_DWORDS || count < 0)
		return -EINVAL;

	req_sz = (size_t)ndw * sizeof(u32);
	req = kvzalloc(max_t(size_t, req_sz, sizeof(u32)), GFP_KERNEL);
	rsp = kzalloc(DOE_LOOP_RSP_DWORDS * sizeof(u32), GFP_KERNEL);
	if (!req || !rsp) {
		kvfree(req);
		kfree(rsp);
		return -ENOMEM;
	}
	/* payload dword 0 = 0: for discovery, index 0; everything else zero */

	mutex_lock(&run_lock);
	if (!doe_ready) {	/* run= at insmod time, or module going away */
		pr_err("doe_loop: run only after load (write /sys/module/doe_loop/parameters/run)\n");
		count = 0;
		first = -EAGAIN;
	}
	for (i = 0; i < count; i++) {
		ktime_t t0;
		int rv;

		if (fatal_signal_pending(current)) {
			if (!first)
				first = -EINTR;
			break;
		}
		t0 = ktime_get();
		rv = doe_loop_exchange(vid, type, req, req_sz, rsp,
				       DOE_LOOP_RSP_DWORDS * sizeof(u32));
		last_ns = ktime_to_ns(ktime_sub(ktime_get(), t0));
		last_rv = rv;
		made++;
		pr_info("doe_loop: exchange %lu vid=0x%04x type=%u req=%zu bytes rv=%d\n",
			made, vid, type, req_sz, rv);
		if (rv < 0 && !first)
			first = rv;
		if (rv == -ENODEV)	/* mailbox gone */
			break;
	}
	mutex_unlock(&run_lock);

	kvfree(req);
	kfree(rsp);
	return first;
}

static const struct kernel_param_ops run_ops = {
	.set = run_set,
};
module_param_cb(run, &run_ops, NULL, 0200);
MODULE_PARM_DESC(run, "write \"VENDOR TYPE REQUEST_DWORDS COUNT\" to run COUNT DOE exchanges");

static struct pci_dev *doe_loop_find_dev(void)
{
	unsigned int dom, bus, slot, fn;

	if (bdf && *bdf) {
		if (sscanf(bdf, "%x:%x:%x.%x", &dom, &bus, &slot, &fn) != 4 ||
		    bus > 0xff || slot > 0x1f || fn > 7) {
			pr_err("doe_loop: bad bdf=%s (want DDDD:BB:DD.F)\n", bdf);
			return NULL;
		}
		return pci_get_domain_bus_and_slot(dom, bus, PCI_DEVFN(slot, fn));
	}
	return pci_get_class(DOE_LOOP_CLASS_CXL_MEM, NULL);
}

static int __init doe_loop_init(void)
{
	int rc;

	doe_pdev = doe_loop_find_dev();
	if (!doe_pdev) {
		pr_err("doe_loop: no device (class 0x050210 or bdf=)\n");
		return -ENODEV;
	}
	doe_cap = pci_find_next_ext_capability(doe_pdev, 0, PCI_EXT_CAP_ID_DOE);
	if (!doe_cap) {
		pr_err("doe_loop: %s has no DOE capability\n", pci_name(doe_pdev));
		rc = -ENODEV;
		goto err;
	}

#ifdef DOE_LOOP_TASK_API
	kernel_task_complete = doe_loop_lookup("pci_doe_task_complete");
	if (IS_ERR(kernel_task_complete)) {
		rc = PTR_ERR(kernel_task_complete);
		pr_err("doe_loop: cannot find the kernel's pci_doe_task_complete (kprobe lookup: %d); refusing to load: the exchanges must complete through the kernel's own callback\n",
		       rc);
		goto err;
	}
	pr_info("doe_loop: kernel pci_doe_task_complete at %pS\n",
		kernel_task_complete);
	rc = doe_loop_create_mb();
	if (rc)
		goto err;
	pr_info("doe_loop: %s DOE cap %#x: own mailbox object ready (task API)\n",
		pci_name(doe_pdev), doe_cap);
#else
	if (!pci_find_doe_mailbox(doe_pdev, PCI_VENDOR_ID_PCI_SIG, 0)) {
		pr_err("doe_loop: %s: the PCI core created no DOE mailbox\n",
		       pci_name(doe_pdev));
		rc = -ENODEV;
		goto err;
	}
	pr_info("doe_loop: %s DOE cap %#x: using the PCI core's mailboxes (pci_doe)\n",
		pci_name(doe_pdev), doe_cap);
#endif
	doe_ready = true;
	return 0;
err:
	pci_dev_put(doe_pdev);
	return rc;
}

static void __exit doe_loop_exit(void)
{
	mutex_lock(&run_lock);	/* wait for a run in flight */
	doe_ready = false;
	mutex_unlock(&run_lock);
#ifdef DOE_LOOP_TASK_API
	doe_loop_release_mb();
#endif
	pr_info("doe_loop: unloaded after %lu exchange(s)\n", made);
	pci_dev_put(doe_pdev);
}

module_init(doe_loop_init);
module_exit(doe_loop_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("cfgaudit test helper: run DOE exchanges through the kernel's DOE code on demand");
