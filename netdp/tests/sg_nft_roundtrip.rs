//! The nf_tables encoder against the real kernel: every expression kind, sets
//! and maps (interval, concatenation, verdict maps), in-place element updates,
//! atomicity and error reporting; `nft -j list ruleset` is the oracle.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use kiln_netdp::nft::sys::*;
use kiln_netdp::nft::*;

const T: &str = "kt";

fn set(
    name: &str,
    flags: u32,
    key_type: u32,
    key_len: u32,
    data: Option<(u32, u32)>,
    concat: Vec<u32>,
) -> SetDef {
    SetDef {
        name: name.into(),
        flags,
        key_type,
        key_len,
        data,
        concat,
    }
}

fn chain(name: &str, hook: Option<(u32, i32, &'static str)>) -> ChainDef {
    ChainDef {
        name: name.into(),
        hook: hook.map(|(hooknum, priority, chain_type)| Hook {
            hooknum,
            priority,
            chain_type,
            policy: Some(Verdict::Accept),
        }),
        userdata: None,
    }
}

fn r(n: u32) -> u32 {
    reg32(n)
}

/// `meta nfproto ipv4`
fn is_ipv4() -> [Expr; 2] {
    [
        Expr::Meta {
            key: NFT_META_NFPROTO,
            dreg: r(0),
        },
        cmp_eq(&[NFPROTO_IPV4]),
    ]
}

fn cmp_eq(data: &[u8]) -> Expr {
    Expr::Cmp {
        sreg: r(0),
        op: CmpOp::Eq,
        data: data.to_vec(),
    }
}

fn build() -> Batch {
    let mut b = Batch::new();
    b.add_table(NFPROTO_INET, T, None);
    for c in [
        chain("b", Some((NF_HOOK_INPUT, 0, "filter"))),
        chain("z", Some((NF_HOOK_PREROUTING, -300, "filter"))),
        chain("n", Some((NF_HOOK_PREROUTING, -100, "nat"))),
        chain("c1", None),
        chain("c2", None),
    ] {
        b.add_chain(NFPROTO_INET, T, &c);
    }
    b.add_set(
        NFPROTO_INET,
        T,
        &set("s4", NFT_SET_INTERVAL, 7, 4, None, vec![]),
    );
    b.add_set(
        NFPROTO_INET,
        T,
        &set(
            "vm",
            NFT_SET_MAP,
            19,
            4,
            Some((NFT_DATA_VERDICT, 0)),
            vec![],
        ),
    );
    b.add_set(
        NFPROTO_INET,
        T,
        &set(
            "cc",
            NFT_SET_INTERVAL | NFT_SET_CONCAT,
            (41 << 6) | 7,
            20,
            None,
            vec![16, 4],
        ),
    );
    let start = Elem::key(vec![10, 0, 0, 0]);
    let mut end = Elem::key(vec![10, 0, 1, 0]);
    end.flags = NFT_SET_ELEM_INTERVAL_END;
    b.add_elems(NFPROTO_INET, T, "s4", &[start, end]);
    let mut v = Elem::key(7u32.to_ne_bytes().to_vec());
    v.data = Some(Data::Verdict(Verdict::Jump("c1".into())));
    b.add_elems(NFPROTO_INET, T, "vm", &[v]);
    let mut key = b"eth0".to_vec();
    key.resize(16, 0);
    let mut k1 = key.clone();
    k1.extend([192, 168, 0, 0]);
    let mut k2 = key;
    k2.extend([192, 168, 0, 255]);
    let mut cc = Elem::key(k1);
    cc.key_end = Some(k2);
    b.add_elems(NFPROTO_INET, T, "cc", &[cc]);

    // tcp dport 22 counter accept
    b.add_rule(
        NFPROTO_INET,
        T,
        "b",
        &[
            Expr::Meta {
                key: NFT_META_L4PROTO,
                dreg: r(0),
            },
            cmp_eq(&[6]),
            Expr::Payload {
                base: PayloadBase::Transport,
                offset: 2,
                len: 2,
                dreg: r(0),
            },
            cmp_eq(&22u16.to_be_bytes()),
            Expr::Counter,
            Expr::verdict(Verdict::Accept),
        ],
        None,
    );
    // ct state established,related goto c2
    b.add_rule(
        NFPROTO_INET,
        T,
        "b",
        &[
            Expr::Ct {
                key: NFT_CT_STATE,
                dreg: r(0),
            },
            Expr::Bitwise {
                sreg: r(0),
                dreg: r(0),
                mask: 6u32.to_ne_bytes().to_vec(),
                xor: vec![0; 4],
            },
            Expr::Cmp {
                sreg: r(0),
                op: CmpOp::Neq,
                data: vec![0; 4],
            },
            Expr::verdict(Verdict::Goto("c2".into())),
        ],
        None,
    );
    // meta mark vmap @vm
    b.add_rule(
        NFPROTO_INET,
        T,
        "b",
        &[
            Expr::Meta {
                key: NFT_META_MARK,
                dreg: r(0),
            },
            Expr::Lookup {
                set: "vm".into(),
                sreg: r(0),
                dreg: Some(NFT_REG_VERDICT),
                invert: false,
            },
        ],
        None,
    );
    // ip saddr @s4 jump c1 ; iifname . ip saddr @cc drop
    b.add_rule(
        NFPROTO_INET,
        T,
        "b",
        &[
            is_ipv4()[0].clone(),
            is_ipv4()[1].clone(),
            Expr::Payload {
                base: PayloadBase::Network,
                offset: 12,
                len: 4,
                dreg: r(0),
            },
            Expr::Lookup {
                set: "s4".into(),
                sreg: r(0),
                dreg: None,
                invert: false,
            },
            Expr::verdict(Verdict::Jump("c1".into())),
        ],
        None,
    );
    b.add_rule(
        NFPROTO_INET,
        T,
        "b",
        &[
            is_ipv4()[0].clone(),
            is_ipv4()[1].clone(),
            Expr::Meta {
                key: NFT_META_IIFNAME,
                dreg: r(0),
            },
            Expr::Payload {
                base: PayloadBase::Network,
                offset: 12,
                len: 4,
                dreg: r(4),
            },
            Expr::Lookup {
                set: "cc".into(),
                sreg: r(0),
                dreg: None,
                invert: false,
            },
            Expr::verdict(Verdict::Drop),
        ],
        None,
    );
    b.add_rule(
        NFPROTO_INET,
        T,
        "c1",
        &[Expr::verdict(Verdict::Return)],
        None,
    );
    // ct zone set 5
    b.add_rule(
        NFPROTO_INET,
        T,
        "z",
        &[
            Expr::Immediate {
                dreg: r(0),
                data: Data::Value(5u16.to_ne_bytes().to_vec()),
            },
            Expr::CtSet {
                key: NFT_CT_ZONE,
                sreg: r(0),
            },
        ],
        None,
    );
    // ip daddr 10.9.9.1 dnat to 10.9.9.2
    b.add_rule(
        NFPROTO_INET,
        T,
        "n",
        &[
            is_ipv4()[0].clone(),
            is_ipv4()[1].clone(),
            Expr::Payload {
                base: PayloadBase::Network,
                offset: 16,
                len: 4,
                dreg: r(0),
            },
            cmp_eq(&[10, 9, 9, 1]),
            Expr::Immediate {
                dreg: r(1),
                data: Data::Value(vec![10, 9, 9, 2]),
            },
            Expr::Nat {
                kind: NatKind::Dnat,
                family: NFPROTO_IPV4,
                addr_min: Some(r(1)),
                addr_max: None,
                proto_min: None,
                proto_max: None,
            },
        ],
        None,
    );
    b
}

#[test]
fn every_expression_kind_round_trips_through_the_kernel() {
    require_env!();
    let f = Fixture::new();
    let mut sock = Fixture::in_ns(&f.host, Socket::open).unwrap();
    sock.send_batch(&build()).unwrap();

    // Read back through our own dump decoder.
    let chains: Vec<String> = sock
        .list_chains(NFPROTO_INET, T)
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(chains.len(), 5, "{chains:?}");
    let s4 = sock.list_elems(NFPROTO_INET, T, "s4").unwrap();
    assert_eq!(s4.len(), 2);
    assert!(s4
        .iter()
        .any(|e| e.key == vec![10, 0, 1, 0] && e.flags & NFT_SET_ELEM_INTERVAL_END != 0));
    let vm = sock.list_elems(NFPROTO_INET, T, "vm").unwrap();
    assert_eq!(vm[0].data, Some(Data::Verdict(Verdict::Jump("c1".into()))));

    let Some(j) = nft_json(&f.host) else {
        eprintln!("skipping the nft oracle: nft is not installed (apt: nftables)");
        return;
    };
    let rules = nft_objects(&j, "rule", "inet", T);
    assert_eq!(rules.len(), 8);
    let text = serde_json::to_string(&j).unwrap();
    for needle in [
        "\"dport\"",
        "\"counter\"",
        "\"goto\"",
        "\"vmap\"",
        "\"@s4\"",
        "\"@cc\"",
        "\"dnat\"",
        "\"zone\"",
        "\"established\"",
        "\"return\"",
        "10.9.9.2",
    ] {
        assert!(text.contains(needle), "{needle} missing from {text}");
    }

    // Named sets updated in place: add one element, delete the range.
    let mut b = Batch::new();
    b.add_elems(NFPROTO_INET, T, "s4", &[Elem::key(vec![10, 1, 0, 1])]);
    let mut end = Elem::key(vec![10, 0, 1, 0]);
    end.flags = NFT_SET_ELEM_INTERVAL_END;
    b.del_elems(NFPROTO_INET, T, "s4", &[Elem::key(vec![10, 0, 0, 0]), end]);
    sock.send_batch(&b).unwrap();
    let s4: Vec<Vec<u8>> = sock
        .list_elems(NFPROTO_INET, T, "s4")
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(s4, vec![vec![10, 1, 0, 1]]);
}

#[test]
fn a_failing_message_is_named_and_nothing_of_the_batch_applies() {
    require_env!();
    let f = Fixture::new();
    let mut sock = Fixture::in_ns(&f.host, Socket::open).unwrap();
    let mut b = Batch::new();
    b.add_table(NFPROTO_INET, "atomic", None);
    b.add_chain(NFPROTO_INET, "atomic", &chain("c", None));
    b.add_rule(
        NFPROTO_INET,
        "atomic",
        "missing",
        &[Expr::verdict(Verdict::Accept)],
        None,
    );
    let err = sock.send_batch(&b).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("add rule atomic missing"), "{msg}");
    let tables = sock.list_tables(NFPROTO_INET).unwrap();
    assert!(
        tables.iter().all(|t| t.name != "atomic"),
        "the batch was all or nothing"
    );
    // An empty batch sends nothing and succeeds.
    sock.send_batch(&Batch::new()).unwrap();
}
