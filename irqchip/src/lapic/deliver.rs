// SPDX-License-Identifier: GPL-2.0-only
//! Upstream `kvm_irq_delivery_to_apic` (6.12 `irq_comm.c` + `lapic.c`'s optimized map) as a
//! pure function over the vCPUs' published [`DestInfo`]s, so the module can resolve IPIs,
//! IOAPIC and MSI requests without taking any vCPU lock.
//!
//! Upstream first tries its optimized APIC map (`kvm_irq_delivery_to_apic_fast`): no
//! shorthand, not a broadcast, and a map that exists (at least one vCPU, no physical-ID
//! aliasing unless `KVM_X2APIC_API_USE_32BIT_IDS`) and, for logical destinations, all
//! software-enabled APICs in one logical mode with unique logical IDs. That path returns 0
//! when the destination has no vCPU and picks lowest-priority targets by hashing the vector
//! over the logical mask. Otherwise the slow path matches every present APIC
//! (`kvm_apic_match_dest`) and returns -1 when nothing matched. Both are reproduced here:
//! the map is rebuilt from the `DestInfo`s on each call (one pass, no allocation; upstream
//! rebuilds it on every relevant register change, so the outcome is the same).

use super::dest::{is_lowest_priority, match_dest, DestInfo, DfrModel, Sender};
use crate::irq::{LapicIrq, Shorthand};

/// VM-wide `KVM_CAP_X2APIC_API` state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DeliveryCtx {
    /// `KVM_X2APIC_API_USE_32BIT_IDS` (`kvm->arch.x2apic_format`).
    pub x2apic_format: bool,
    /// `KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK`.
    pub broadcast_quirk_disabled: bool,
}

/// Logical mode of the optimized map (`enum kvm_apic_logical_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LogicalMode {
    SwDisabled,
    X2Apic,
    Flat,
    Cluster,
    Disabled,
}

/// Physical IDs the map can hold without falling back (KVM's vCPU IDs are below 4096).
const MAX_TRACKED_ID: u32 = 4095;

/// The parts of upstream's `struct kvm_apic_map` one request needs.
struct MapView {
    max_id: u32,
    logical_mode: LogicalMode,
    /// `phys_map[dest_id]` for a physical request.
    phys_dest: Option<usize>,
    /// `phys_map[offset..offset + 16]` for an x2APIC logical request.
    x2_cluster: [Option<usize>; 16],
    /// `xapic_flat_map`.
    flat: [Option<usize>; 8],
    /// `xapic_cluster_map[(dest >> 4) & 0xf]`.
    cluster: [Option<usize>; 4],
}

/// Builds the map view (`kvm_recalculate_apic_map`); `None` if the map would not exist.
fn build_map(
    dest_id: u32,
    n: usize,
    dest: &impl Fn(usize) -> DestInfo,
    x2apic_format: bool,
) -> Option<MapView> {
    if n == 0 {
        return None;
    }
    let mut max_id = 255u32;
    for i in 0..n {
        let d = dest(i);
        if d.present() {
            max_id = max_id.max(d.x2apic_id());
        }
    }
    if max_id > MAX_TRACKED_ID {
        return None;
    }
    let x2_offset = (dest_id >> 16) * 16;
    let mut m = MapView {
        max_id,
        logical_mode: LogicalMode::SwDisabled,
        phys_dest: None,
        x2_cluster: [None; 16],
        flat: [None; 8],
        cluster: [None; 4],
    };
    // Occupancy of phys_map (aliasing check without 32-bit IDs), the flat map and the 16
    // cluster maps.
    let mut phys_used = [0u64; (MAX_TRACKED_ID as usize + 1) / 64];
    let mut flat_used = 0u8;
    let mut cluster_used = [0u8; 16];
    let dest_cluster = ((dest_id >> 4) & 0xf) as usize;
    for i in 0..n {
        let d = dest(i);
        if !d.present() {
            continue;
        }
        // kvm_recalculate_phys_map.
        let x2id = d.x2apic_id();
        let xid = d.xapic_id() as u32;
        let mut put = |slot: u32, only_if_empty: bool| {
            put_phys(
                &mut phys_used,
                &mut m,
                slot,
                only_if_empty,
                i,
                dest_id,
                x2_offset,
            )
        };
        if x2apic_format {
            if d.x2apic_mode() || x2id > 0xff {
                put(x2id, false);
            }
            if !d.x2apic_mode() {
                put(xid, true);
            }
        } else {
            let pid = if d.x2apic_mode() { x2id } else { xid };
            if !put(pid, true) {
                // Aliased physical ID: upstream drops the optimized map.
                return None;
            }
        }
        // kvm_recalculate_logical_map.
        if m.logical_mode == LogicalMode::Disabled || !d.sw_enabled() || !d.ldr_nonzero() {
            continue;
        }
        let mode = if d.x2apic_mode() {
            LogicalMode::X2Apic
        } else if d.dfr() == DfrModel::Flat {
            LogicalMode::Flat
        } else {
            LogicalMode::Cluster
        };
        if m.logical_mode == LogicalMode::SwDisabled {
            m.logical_mode = mode;
        } else if m.logical_mode != mode {
            m.logical_mode = LogicalMode::Disabled;
            continue;
        }
        if mode == LogicalMode::X2Apic {
            continue;
        }
        let ldr = d.logical_id();
        let (used, mask, is_dest_cluster) = if mode == LogicalMode::Flat {
            (&mut flat_used, ldr, true)
        } else {
            let c = ((ldr >> 4) & 0xf) as usize;
            let Some(u) = cluster_used.get_mut(c) else {
                continue;
            };
            (u, ldr & 0xf, c == dest_cluster)
        };
        if mask == 0 {
            continue;
        }
        let bit = mask.trailing_zeros();
        if !mask.is_power_of_two() || *used & mask != 0 {
            m.logical_mode = LogicalMode::Disabled;
            continue;
        }
        *used |= mask;
        if is_dest_cluster {
            let slots: &mut [Option<usize>] = if mode == LogicalMode::Flat {
                &mut m.flat
            } else {
                &mut m.cluster
            };
            if let Some(s) = slots.get_mut(bit as usize) {
                *s = Some(i);
            }
        }
    }
    Some(m)
}

/// Writes vCPU `i` into `phys_map[slot]`, recording it if the slot is one the request
/// looks at. With `only_if_empty`, an occupied slot is left alone and `false` returned.
fn put_phys(
    used: &mut [u64],
    m: &mut MapView,
    slot: u32,
    only_if_empty: bool,
    i: usize,
    dest_id: u32,
    x2_offset: u32,
) -> bool {
    let bit = 1u64 << (slot % 64);
    let Some(word) = used.get_mut((slot / 64) as usize) else {
        return false;
    };
    if only_if_empty && *word & bit != 0 {
        return false;
    }
    *word |= bit;
    if slot == dest_id {
        m.phys_dest = Some(i);
    }
    if let Some(s) = slot
        .checked_sub(x2_offset)
        .and_then(|o| m.x2_cluster.get_mut(o as usize))
    {
        *s = Some(i);
    }
    true
}

/// The index of the `n`-th set bit of `mask` (`find_nth_bit`).
fn nth_bit(mask: u16, n: u32) -> Option<usize> {
    let mut m = mask;
    for _ in 0..n {
        m &= m.checked_sub(1)?;
    }
    (m != 0).then(|| m.trailing_zeros() as usize)
}

/// `kvm_irq_delivery_to_apic_fast` after the self shorthand: `None` when upstream falls
/// back to the slow path.
fn deliver_fast(
    irq: &LapicIrq,
    sender: Option<usize>,
    n: usize,
    dest: &impl Fn(usize) -> DestInfo,
    ctx: DeliveryCtx,
    set_irq: &mut impl FnMut(usize, &LapicIrq) -> i32,
) -> Option<i32> {
    if irq.shorthand != Shorthand::None {
        return None;
    }
    let map = build_map(irq.dest_id, n, dest, ctx.x2apic_format)?;
    // kvm_apic_is_broadcast_dest.
    let broadcast = if ctx.broadcast_quirk_disabled {
        (irq.dest_id == 0xff && map.logical_mode != LogicalMode::X2Apic)
            || irq.dest_id == 0xffff_ffff
    } else {
        let x2apic_ipi = sender.is_some_and(|s| dest(s).x2apic_mode());
        irq.dest_id == if x2apic_ipi { 0xffff_ffff } else { 0xff }
    };
    if broadcast {
        return None;
    }
    if !irq.dest_logical {
        if irq.dest_id > map.max_id {
            return Some(0);
        }
        return Some(map.phys_dest.map_or(0, |t| set_irq(t, irq)));
    }
    let (slots, mut mask): (&[Option<usize>], u16) = match map.logical_mode {
        LogicalMode::Disabled => return None,
        LogicalMode::SwDisabled => (&map.flat, 0),
        LogicalMode::X2Apic => {
            let offset = (irq.dest_id >> 16) * 16;
            if offset <= map.max_id {
                let size = (map.max_id - offset + 1).min(16);
                (
                    &map.x2_cluster,
                    irq.dest_id as u16 & (0xffff >> (16 - size)),
                )
            } else {
                (&map.x2_cluster, 0)
            }
        }
        LogicalMode::Flat => (&map.flat, irq.dest_id as u16 & 0xff),
        LogicalMode::Cluster => (&map.cluster, irq.dest_id as u16 & 0xf),
    };
    if is_lowest_priority(irq) {
        if mask == 0 {
            return Some(0);
        }
        let idx = nth_bit(mask, u32::from(irq.vector) % mask.count_ones())?;
        if slots.get(idx).copied().flatten().is_none() {
            return Some(0);
        }
        mask = 1 << idx;
    }
    let mut r = 0;
    for (bit, slot) in slots.iter().enumerate() {
        if mask & (1 << bit) != 0 {
            if let Some(t) = slot {
                r += set_irq(*t, irq);
            }
        }
    }
    Some(r)
}

/// Upstream `kvm_sched_yield`'s target look-up: `map->phys_map[dest_id]` of the optimized
/// APIC map over vCPUs `0..n` (published state `dest(i)`), i.e. the present APIC whose
/// physical ID is `dest_id` (its x2APIC ID in x2APIC mode, else its xAPIC ID; with
/// `x2apic_format` also x2APIC IDs above 0xff). `None` when upstream finds none: no map
/// (no vCPUs, an ID above the tracked range, aliased IDs without 32-bit IDs), `dest_id`
/// above the map's `max_apic_id`, or an empty slot.
pub fn phys_map_target(
    dest_id: u32,
    n: usize,
    dest: impl Fn(usize) -> DestInfo,
    x2apic_format: bool,
) -> Option<usize> {
    let m = build_map(dest_id, n, &dest, x2apic_format)?;
    if dest_id > m.max_id {
        return None;
    }
    m.phys_dest
}

/// Upstream `kvm_irq_delivery_to_apic`: delivers `irq` to the vCPUs (indices `0..n`, in
/// vCPU index order) whose published state `dest(i)` returns. `sender` is the sending
/// vCPU's index for an IPI, `None` for a device (IOAPIC, MSI, PIC). `set_irq(i, &irq)` posts
/// to vCPU `i` (with [`super::Pir::post`] on its current `DestInfo`) and returns 1 if it
/// was accepted, else 0. Returns -1 when the slow path found no target, else the number of
/// accepting vCPUs.
pub fn deliver_irq(
    irq: &LapicIrq,
    sender: Option<usize>,
    n: usize,
    dest: impl Fn(usize) -> DestInfo,
    ctx: DeliveryCtx,
    mut set_irq: impl FnMut(usize, &LapicIrq) -> i32,
) -> i32 {
    if irq.shorthand == Shorthand::SelfOnly {
        // Upstream delivers to the source without looking at the map; without a source it
        // is a KVM bug (KVM_BUG_ON) answering 0.
        return sender.map_or(0, |s| set_irq(s, irq));
    }
    if let Some(r) = deliver_fast(irq, sender, n, &dest, ctx, &mut set_irq) {
        return r;
    }
    let mut irq = *irq;
    super::dest::fixup_phys_broadcast_lowest(&mut irq);
    let lowest = is_lowest_priority(&irq);
    let matches = |i: usize| {
        let d = dest(i);
        let who = match sender {
            Some(s) => Sender::Apic { is_target: s == i },
            None => Sender::Device,
        };
        d.present() && match_dest(d, &irq, who, ctx.broadcast_quirk_disabled)
    };
    let mut r = -1;
    let mut candidates = 0u32;
    for i in 0..n {
        if !matches(i) {
            continue;
        }
        if !lowest {
            r = r.max(0) + set_irq(i, &irq);
        } else if dest(i).sw_enabled() {
            candidates += 1;
        }
    }
    if candidates != 0 {
        let mut k = u32::from(irq.vector) % candidates;
        for i in 0..n {
            if matches(i) && dest(i).sw_enabled() {
                if k == 0 {
                    return set_irq(i, &irq);
                }
                k -= 1;
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irq::DeliveryMode;
    use crate::lapic::dest::x2apic_ldr;

    fn xapic(id: u8, ldr: u8, dfr: DfrModel) -> DestInfo {
        DestInfo::new(id as u32, id, ldr, dfr, true, true, false)
    }

    fn x2(id: u32) -> DestInfo {
        DestInfo::new(id, 0, 0, DfrModel::Flat, true, true, true)
    }

    fn irq(dest: u32, logical: bool, mode: DeliveryMode, vector: u8) -> LapicIrq {
        LapicIrq {
            vector,
            delivery_mode: mode,
            dest_logical: logical,
            level_triggered: false,
            level: true,
            shorthand: Shorthand::None,
            dest_id: dest,
            msi_redir_hint: false,
        }
    }

    /// Runs a delivery over `apics`; returns (r, targets as a bit set).
    fn run(
        apics: &[DestInfo],
        irq: &LapicIrq,
        sender: Option<usize>,
        ctx: DeliveryCtx,
    ) -> (i32, u64) {
        let mut hit = 0u64;
        let r = deliver_irq(
            irq,
            sender,
            apics.len(),
            |i| apics[i],
            ctx,
            |i, _| {
                hit |= 1 << i;
                1
            },
        );
        (r, hit)
    }

    const FIXED: DeliveryMode = DeliveryMode::Fixed;
    const LOWEST: DeliveryMode = DeliveryMode::LowestPriority;

    #[test]
    fn phys_map_target_is_the_physical_id_slot() {
        let v = [
            xapic(0, 0, DfrModel::Flat),
            xapic(1, 0, DfrModel::Flat),
            DestInfo::new(5, 5, 0, DfrModel::Flat, true, false, true), // x2APIC mode
            DestInfo::new(3, 3, 0, DfrModel::Flat, false, true, false), // EN=0
        ];
        let d = |i: usize| v[i];
        assert_eq!(phys_map_target(1, 4, d, false), Some(1));
        assert_eq!(phys_map_target(5, 4, d, false), Some(2));
        assert_eq!(phys_map_target(3, 4, d, false), None, "not present");
        assert_eq!(phys_map_target(7, 4, d, false), None, "empty slot");
        assert_eq!(
            phys_map_target(0x100, 4, d, false),
            None,
            "above max_apic_id"
        );
        assert_eq!(phys_map_target(0, 0, d, false), None, "no vCPUs, no map");
        // Aliased xAPIC IDs without 32-bit IDs: no map.
        let a = [xapic(1, 0, DfrModel::Flat), xapic(1, 0, DfrModel::Flat)];
        assert_eq!(phys_map_target(1, 2, |i: usize| a[i], false), None);
    }

    #[test]
    fn physical_unicast_and_absent_targets() {
        let v = [xapic(0, 0, DfrModel::Flat), xapic(1, 0, DfrModel::Flat)];
        let c = DeliveryCtx::default();
        assert_eq!(run(&v, &irq(1, false, FIXED, 0x30), None, c), (1, 0b10));
        // Absent ID: the map path answers 0, not -1.
        assert_eq!(run(&v, &irq(7, false, FIXED, 0x30), None, c), (0, 0));
        assert_eq!(run(&v, &irq(0x1234, false, FIXED, 0x30), None, c), (0, 0));
        // No vCPUs at all: no map, slow path, -1.
        assert_eq!(run(&[], &irq(1, false, FIXED, 0x30), None, c), (-1, 0));
        // Broadcast goes the slow way and reaches everyone.
        assert_eq!(run(&v, &irq(0xff, false, FIXED, 0x30), None, c), (2, 0b11));
        // Not present (EN=0): neither path sees it.
        let off = [
            DestInfo::new(0, 0, 0, DfrModel::Flat, false, true, false),
            v[1],
        ];
        assert_eq!(run(&off, &irq(0, false, FIXED, 0x30), None, c), (0, 0));
        assert_eq!(
            run(&off, &irq(0xff, false, FIXED, 0x30), None, c),
            (1, 0b10)
        );
    }

    #[test]
    fn aliased_ids_without_and_with_32bit_ids() {
        // Two vCPUs with xAPIC ID 3 (the guest rewrote one).
        let v = [
            DestInfo::new(0, 3, 0, DfrModel::Flat, true, true, false),
            DestInfo::new(3, 3, 0, DfrModel::Flat, true, true, false),
        ];
        // Legacy: the map is dropped, the slow path delivers to both.
        let c = DeliveryCtx::default();
        assert_eq!(run(&v, &irq(3, false, FIXED, 0x30), None, c), (2, 0b11));
        assert_eq!(run(&v, &irq(9, false, FIXED, 0x30), None, c), (-1, 0));
        // 32-bit IDs: the first vCPU owns the xAPIC slot.
        let c = DeliveryCtx {
            x2apic_format: true,
            ..DeliveryCtx::default()
        };
        assert_eq!(run(&v, &irq(3, false, FIXED, 0x30), None, c), (1, 0b01));
    }

    #[test]
    fn hotplug_ids_above_255() {
        let v = [
            xapic(0, 0, DfrModel::Flat),
            DestInfo::new(0x105, 0x05, 0, DfrModel::Flat, true, true, false),
        ];
        let c = DeliveryCtx {
            x2apic_format: true,
            ..DeliveryCtx::default()
        };
        assert_eq!(run(&v, &irq(0x105, false, FIXED, 0x30), None, c), (1, 0b10));
        assert_eq!(run(&v, &irq(0x05, false, FIXED, 0x30), None, c), (1, 0b10));
    }

    #[test]
    fn logical_flat_cluster_and_lowest_priority_hashing() {
        let v = [
            xapic(0, 0x01, DfrModel::Flat),
            xapic(1, 0x02, DfrModel::Flat),
            xapic(2, 0x04, DfrModel::Flat),
        ];
        let c = DeliveryCtx::default();
        assert_eq!(run(&v, &irq(0x05, true, FIXED, 0x30), None, c), (2, 0b101));
        // Lowest priority: vector % popcount(mask) picks the bit.
        assert_eq!(run(&v, &irq(0x07, true, LOWEST, 0x31), None, c), (1, 0b010));
        assert_eq!(run(&v, &irq(0x07, true, LOWEST, 0x33), None, c), (1, 0b001));
        // A hashed bit without a vCPU drops the interrupt.
        assert_eq!(run(&v, &irq(0x18, true, LOWEST, 0x31), None, c), (0, 0));
        // Cluster mode.
        let v = [
            xapic(0, 0x11, DfrModel::Cluster),
            xapic(1, 0x12, DfrModel::Cluster),
            xapic(2, 0x21, DfrModel::Cluster),
        ];
        assert_eq!(run(&v, &irq(0x13, true, FIXED, 0x30), None, c), (2, 0b011));
        assert_eq!(run(&v, &irq(0x21, true, FIXED, 0x30), None, c), (1, 0b100));
        // Mixed flat/cluster: the map's logical mode is disabled, the slow path matches
        // flat and cluster APICs by their own models.
        let v = [
            xapic(0, 0x01, DfrModel::Flat),
            xapic(1, 0x11, DfrModel::Cluster),
        ];
        assert_eq!(run(&v, &irq(0x11, true, FIXED, 0x30), None, c), (2, 0b11));
        assert_eq!(run(&v, &irq(0x40, true, FIXED, 0x30), None, c), (-1, 0));
        // Two APICs with the same logical bit: slow path, both get it; lowest priority
        // hashes over the matching software-enabled vCPUs in index order.
        let v = [
            xapic(0, 0x01, DfrModel::Flat),
            xapic(1, 0x01, DfrModel::Flat),
        ];
        assert_eq!(run(&v, &irq(0x01, true, FIXED, 0x30), None, c), (2, 0b11));
        assert_eq!(run(&v, &irq(0x01, true, LOWEST, 0x31), None, c), (1, 0b10));
    }

    #[test]
    fn x2apic_logical_and_broadcast_quirk() {
        let v = [x2(0), x2(1), x2(0x11)];
        let c = DeliveryCtx::default();
        // Cluster 0, bits 0 and 1.
        assert_eq!(
            run(&v, &irq(0x0_0003, true, FIXED, 0x30), None, c),
            (2, 0b011)
        );
        // Cluster 1, bit 1 = x2APIC ID 0x11.
        assert_eq!(
            run(&v, &irq(0x1_0002, true, FIXED, 0x30), None, c),
            (1, 0b100)
        );
        assert_eq!(x2apic_ldr(0x11), 0x1_0002);
        // Device 0xff: x2APIC broadcast thanks to the quirk; IPIs from an x2APIC sender
        // need 0xffffffff.
        assert_eq!(run(&v, &irq(0xff, false, FIXED, 0x30), None, c), (3, 0b111));
        assert_eq!(run(&v, &irq(0xff, false, FIXED, 0x30), Some(0), c), (0, 0));
        assert_eq!(
            run(&v, &irq(0xffff_ffff, false, FIXED, 0x30), Some(0), c),
            (3, 0b111)
        );
        // Quirk disabled: 0xff is cluster 0 bits 0-7 for x2APIC logical, and physical ID
        // 0xff for physical.
        let q = DeliveryCtx {
            broadcast_quirk_disabled: true,
            ..c
        };
        assert_eq!(run(&v, &irq(0xff, true, FIXED, 0x30), None, q), (2, 0b011));
        assert_eq!(run(&v, &irq(0xff, false, FIXED, 0x30), None, q), (0, 0));
    }

    #[test]
    fn shorthands() {
        let v = [
            xapic(0, 0, DfrModel::Flat),
            xapic(1, 0, DfrModel::Flat),
            xapic(2, 0, DfrModel::Flat),
        ];
        let c = DeliveryCtx::default();
        let mut i = irq(0, false, FIXED, 0x30);
        i.shorthand = Shorthand::SelfOnly;
        assert_eq!(run(&v, &i, Some(1), c), (1, 0b010));
        assert_eq!(run(&v, &i, None, c), (0, 0));
        i.shorthand = Shorthand::AllExcludingSelf;
        assert_eq!(run(&v, &i, Some(1), c), (2, 0b101));
        i.shorthand = Shorthand::AllIncludingSelf;
        assert_eq!(run(&v, &i, Some(1), c), (3, 0b111));
        // Physical broadcast with lowest priority becomes fixed.
        let b = irq(0xff, false, LOWEST, 0x30);
        assert_eq!(run(&v, &b, None, c), (3, 0b111));
    }

    #[test]
    fn random_tables_never_panic_and_count_right() {
        let mut x = 0x1234_5678_9abc_def1u64;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let n = (rnd() % 40) as usize;
            let mut v = [DestInfo::NONE; 40];
            for d in v.iter_mut().take(n) {
                let r = rnd();
                let id = if r & 1 == 0 {
                    (r >> 8) as u32 % 300
                } else {
                    (r >> 8) as u32 % 4096
                };
                let dfr =
                    [DfrModel::Flat, DfrModel::Cluster, DfrModel::Invalid][(r >> 40) as usize % 3];
                *d = DestInfo::new(
                    id,
                    (r >> 16) as u8 % 8,
                    (r >> 24) as u8,
                    dfr,
                    r & 2 != 0 || r & 4 != 0,
                    r & 8 != 0 || r & 16 != 0,
                    r & 32 != 0,
                )
                .with_ldr_nonzero(r & 64 != 0 || (r >> 24) as u8 != 0);
            }
            let r = rnd();
            let mut i = irq(
                match r % 4 {
                    0 => 0xff,
                    1 => 0xffff_ffff,
                    2 => (r >> 8) as u32 % 16,
                    _ => (r >> 8) as u32,
                },
                r & (1 << 40) != 0,
                DeliveryMode::from_bits((r >> 41) as u32),
                (r >> 48) as u8,
            );
            i.msi_redir_hint = r & (1 << 56) != 0;
            i.shorthand = [
                Shorthand::None,
                Shorthand::None,
                Shorthand::SelfOnly,
                Shorthand::AllIncludingSelf,
                Shorthand::AllExcludingSelf,
            ][(r >> 57) as usize % 5];
            let sender = (n > 0 && r & (1 << 63) != 0).then(|| (r >> 20) as usize % n);
            let c = DeliveryCtx {
                x2apic_format: r & (1 << 61) != 0,
                broadcast_quirk_disabled: r & (1 << 62) != 0,
            };
            let mut calls = 0;
            let res = deliver_irq(
                &i,
                sender,
                n,
                |k| v[k],
                c,
                |k, _| {
                    assert!(k < n);
                    calls += 1;
                    1
                },
            );
            assert!(res >= -1);
            assert_eq!(res.max(0), calls);
        }
    }

    #[test]
    fn nth_bit_helper() {
        assert_eq!(nth_bit(0b1011, 0), Some(0));
        assert_eq!(nth_bit(0b1011, 1), Some(1));
        assert_eq!(nth_bit(0b1011, 2), Some(3));
        assert_eq!(nth_bit(0b1011, 3), None);
        assert_eq!(nth_bit(0, 0), None);
    }
}
