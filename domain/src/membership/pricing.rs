//! Checkout pricing, in one place: the cart preview, the quote and `placeOrder` all call
//! [`quote`], so what a member is shown is what the order charges.
//!
//! All amounts are integer fen. The rules, in order:
//!
//! 1. **Unit price**: the SKU's member price for the member's tier when that line costs less at
//!    it than at the list price minus the tier discount, else the list price (the member always
//!    gets the better of the two). `subtotal` = Σ unit × quantity.
//! 2. **Tier discount**: the tier's rate (basis points) on each line sold at list price (lines at a
//!    member price already carry the tier's benefit), **rounded down to the fen per line**.
//! 3. **Coupon**: it applies to the lines it targets (all lines when it targets nothing; a
//!    category target covers its subcategories). Its minimum spend is checked against those
//!    lines' total at unit price. A fixed coupon takes its amount, a percentage coupon its
//!    percentage (rounded down, at most its cap) — both of those lines' total after the tier
//!    discount, and never more.
//! 4. **Points**: `points_per_yuan` points are worth ¥1; at most `points_max_ratio_bp` of what is
//!    left after the tier discount and the coupon can be paid with points. The discount is the
//!    points' value rounded down to the fen; only the points that discount needs are taken
//!    (their count rounded up), never more than asked for.
//! 5. An order always costs at least 1 fen (WeChat Pay's minimum): coupon and points stop short
//!    of the last fen.
//! 6. **Shipping**: free when the goods total (after every discount) reaches the tier's
//!    free-shipping threshold, else the flat fee; never discounted.
//!
//! `total` = `subtotal` − tier discount − coupon − points + shipping.

/// A line to price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceLine {
    /// The SKU.
    pub sku_id: u64,
    /// Its product.
    pub product_id: u64,
    /// The product's categories and all their ancestors.
    pub category_ids: Vec<u64>,
    /// List price of one unit.
    pub list_price_fen: i64,
    /// The member's price of one unit for their tier, if the SKU has one.
    pub member_price_fen: Option<i64>,
    /// Units.
    pub quantity: i32,
}

/// A line as priced for one tier (rules 1 and 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    /// The SKU.
    pub sku_id: u64,
    /// The price one unit is sold at.
    pub unit_price_fen: i64,
    /// Unit price × quantity.
    pub total_fen: i64,
    /// The tier discount on this line (0 at a member price).
    pub tier_share_fen: i64,
}

impl PriceLine {
    /// This line for a tier discount of `tier_bp`: the member price when it beats the list
    /// price less the tier discount.
    pub fn resolve(&self, tier_bp: i32) -> Resolved {
        let q = i64::from(self.quantity);
        let list_total = self.list_price_fen * q;
        let tier_on_list = bp_of(list_total, i64::from(tier_bp.clamp(0, 10_000)));
        match self.member_price_fen {
            Some(member) if member * q < list_total - tier_on_list => Resolved {
                sku_id: self.sku_id,
                unit_price_fen: member,
                total_fen: member * q,
                tier_share_fen: 0,
            },
            _ => Resolved {
                sku_id: self.sku_id,
                unit_price_fen: self.list_price_fen,
                total_fen: list_total,
                tier_share_fen: tier_on_list,
            },
        }
    }
}

/// The member's tier, as far as pricing is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TierTerms {
    /// Discount in basis points (500 = 5 %).
    pub discount_bp: i32,
    /// Goods total from which shipping is free; `None` = never free.
    pub free_shipping_threshold_fen: Option<i64>,
}

/// What a coupon takes off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CouponValue {
    /// A fixed amount.
    Fixed {
        /// Fen off.
        amount_fen: i64,
    },
    /// A percentage of the lines it applies to.
    Percent {
        /// Percent off (1–99).
        percent: i32,
        /// At most this much; `None` = no cap.
        max_fen: Option<i64>,
    },
}

/// A coupon's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CouponTerms {
    /// Its value.
    pub value: CouponValue,
    /// Spend needed on the lines it applies to.
    pub min_spend_fen: i64,
    /// Products it is limited to.
    pub product_ids: Vec<u64>,
    /// Categories it is limited to.
    pub category_ids: Vec<u64>,
}

impl CouponTerms {
    fn applies_to(&self, line: &PriceLine) -> bool {
        (self.product_ids.is_empty() && self.category_ids.is_empty())
            || self.product_ids.contains(&line.product_id)
            || line
                .category_ids
                .iter()
                .any(|c| self.category_ids.contains(c))
    }
}

/// Deployment-wide pricing settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PricingRules {
    /// Points worth ¥1.
    pub points_per_yuan: i64,
    /// Share of the amount after tier discount and coupon that points may pay, basis points.
    pub points_max_ratio_bp: i64,
    /// Flat shipping fee below the free-shipping threshold.
    pub shipping_fee_fen: i64,
}

/// The priced order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quote {
    /// Σ unit price × quantity.
    pub subtotal_fen: i64,
    /// Tier discount.
    pub tier_discount_fen: i64,
    /// Coupon discount.
    pub coupon_discount_fen: i64,
    /// Points discount.
    pub points_discount_fen: i64,
    /// Points taken for it.
    pub points_used: i64,
    /// Shipping charged.
    pub shipping_fen: i64,
    /// What the member pays.
    pub total_fen: i64,
}

impl Quote {
    /// Every discount together.
    pub fn discount_fen(&self) -> i64 {
        self.tier_discount_fen + self.coupon_discount_fen + self.points_discount_fen
    }
}

/// Why an order cannot be priced as asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PricingError {
    /// None of the lines is one the coupon applies to.
    CouponNotApplicable,
    /// The lines it applies to do not reach its minimum spend.
    CouponMinSpend {
        /// The minimum.
        min_spend_fen: i64,
    },
    /// More points asked for than the member has.
    PointsInsufficient {
        /// What they have.
        balance: i64,
    },
    /// A negative number of points.
    InvalidPoints,
}

fn bp_of(amount: i64, bp: i64) -> i64 {
    // i128: no overflow for any fen amount times 10,000
    (i128::from(amount) * i128::from(bp) / 10_000) as i64
}

/// Prices `lines` for a member of `tier` with an optional coupon and points (see the module
/// docs for the rules).
pub fn quote(
    lines: &[PriceLine],
    tier: TierTerms,
    coupon: Option<&CouponTerms>,
    points_requested: i64,
    points_balance: i64,
    rules: PricingRules,
) -> Result<Quote, PricingError> {
    if points_requested < 0 {
        return Err(PricingError::InvalidPoints);
    }
    if points_requested > points_balance {
        return Err(PricingError::PointsInsufficient {
            balance: points_balance,
        });
    }
    let resolved: Vec<(Resolved, &PriceLine)> = lines
        .iter()
        .map(|l| (l.resolve(tier.discount_bp), l))
        .collect();
    let subtotal: i64 = resolved.iter().map(|(r, _)| r.total_fen).sum();
    let tier_discount: i64 = resolved.iter().map(|(r, _)| r.tier_share_fen).sum();

    let coupon_discount = match coupon {
        None => 0,
        Some(c) => {
            let applicable: Vec<&Resolved> = resolved
                .iter()
                .filter(|(_, l)| c.applies_to(l))
                .map(|(r, _)| r)
                .collect();
            if applicable.is_empty() {
                return Err(PricingError::CouponNotApplicable);
            }
            let spend: i64 = applicable.iter().map(|r| r.total_fen).sum();
            if spend < c.min_spend_fen {
                return Err(PricingError::CouponMinSpend {
                    min_spend_fen: c.min_spend_fen,
                });
            }
            let base = spend - applicable.iter().map(|r| r.tier_share_fen).sum::<i64>();
            let value = match c.value {
                CouponValue::Fixed { amount_fen } => amount_fen.max(0),
                CouponValue::Percent { percent, max_fen } => {
                    let off = base * i64::from(percent.clamp(0, 100)) / 100;
                    max_fen.map_or(off, |m| off.min(m.max(0)))
                }
            };
            // never below 1 fen for the whole order
            value.min(base).min((subtotal - tier_discount - 1).max(0))
        }
    };

    let after = subtotal - tier_discount - coupon_discount;
    let points_cap =
        bp_of(after, rules.points_max_ratio_bp.clamp(0, 10_000)).min((after - 1).max(0));
    let per_yuan = rules.points_per_yuan.max(1);
    let asked_value = (i128::from(points_requested) * 100 / i128::from(per_yuan)) as i64;
    let points_discount = asked_value.min(points_cap);
    // the fewest points worth that discount
    let points_used = ((i128::from(points_discount) * i128::from(per_yuan) + 99) / 100) as i64;

    let goods = after - points_discount;
    let free = tier
        .free_shipping_threshold_fen
        .is_some_and(|threshold| goods >= threshold);
    let shipping = if free || lines.is_empty() {
        0
    } else {
        rules.shipping_fee_fen.max(0)
    };
    Ok(Quote {
        subtotal_fen: subtotal,
        tier_discount_fen: tier_discount,
        coupon_discount_fen: coupon_discount,
        points_discount_fen: points_discount,
        points_used,
        shipping_fen: shipping,
        total_fen: goods + shipping,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: PricingRules = PricingRules {
        points_per_yuan: 100,
        points_max_ratio_bp: 5_000,
        shipping_fee_fen: 2_000,
    };

    fn line(sku: u64, product: u64, price: i64, quantity: i32) -> PriceLine {
        PriceLine {
            sku_id: sku,
            product_id: product,
            category_ids: vec![100 + product],
            list_price_fen: price,
            member_price_fen: None,
            quantity,
        }
    }

    fn fixed(amount: i64, min: i64) -> CouponTerms {
        CouponTerms {
            value: CouponValue::Fixed { amount_fen: amount },
            min_spend_fen: min,
            product_ids: vec![],
            category_ids: vec![],
        }
    }

    fn percent(percent: i32, max: Option<i64>, min: i64) -> CouponTerms {
        CouponTerms {
            value: CouponValue::Percent {
                percent,
                max_fen: max,
            },
            min_spend_fen: min,
            product_ids: vec![],
            category_ids: vec![],
        }
    }

    fn tier(bp: i32, free_from: Option<i64>) -> TierTerms {
        TierTerms {
            discount_bp: bp,
            free_shipping_threshold_fen: free_from,
        }
    }

    /// (case, lines, tier, coupon, points, balance) → (subtotal, tier, coupon, points
    /// discount, points used, shipping, total)
    #[test]
    fn pricing_table() {
        type Case<'a> = (
            &'a str,
            Vec<PriceLine>,
            TierTerms,
            Option<CouponTerms>,
            i64,
            (i64, i64, i64, i64, i64, i64, i64),
        );
        let cases: Vec<Case<'_>> = vec![
            (
                "no benefits, below the threshold: flat shipping",
                vec![line(1, 1, 9_999, 1)],
                tier(0, Some(100_000)),
                None,
                0,
                (9_999, 0, 0, 0, 0, 2_000, 11_999),
            ),
            (
                "threshold reached: free shipping",
                vec![line(1, 1, 50_000, 2)],
                tier(0, Some(100_000)),
                None,
                0,
                (100_000, 0, 0, 0, 0, 0, 100_000),
            ),
            (
                "tier 5 %, rounded down per line",
                vec![line(1, 1, 1_999, 3), line(2, 2, 1_001, 1)],
                // 5997 × 5 % = 299.85 → 299; 1001 × 5 % = 50.05 → 50
                tier(500, Some(0)),
                None,
                0,
                (6_998, 349, 0, 0, 0, 0, 6_649),
            ),
            (
                "member price replaces the tier discount on its line",
                vec![
                    PriceLine {
                        member_price_fen: Some(9_000),
                        ..line(1, 1, 10_000, 1)
                    },
                    line(2, 2, 10_000, 1),
                ],
                tier(500, Some(0)),
                None,
                0,
                (19_000, 500, 0, 0, 0, 0, 18_500),
            ),
            (
                "a member price worse than the list price less the tier discount is not used",
                vec![PriceLine {
                    member_price_fen: Some(9_800),
                    ..line(1, 1, 10_000, 1)
                }],
                // 98 % at member price vs 100 % − 3 % = 97 % at list price
                tier(300, Some(0)),
                None,
                0,
                (10_000, 300, 0, 0, 0, 0, 9_700),
            ),
            (
                "a member price above the list price is ignored",
                vec![PriceLine {
                    member_price_fen: Some(12_000),
                    ..line(1, 1, 10_000, 1)
                }],
                tier(0, Some(0)),
                None,
                0,
                (10_000, 0, 0, 0, 0, 0, 10_000),
            ),
            (
                "fixed coupon after the tier discount",
                vec![line(1, 1, 100_000, 1)],
                tier(300, Some(0)),
                Some(fixed(10_000, 50_000)),
                0,
                (100_000, 3_000, 10_000, 0, 0, 0, 87_000),
            ),
            (
                "percentage coupon on the amount after tier, rounded down",
                vec![line(1, 1, 33_333, 1)],
                // after tier: 33333 − 999 = 32334; 15 % = 4850.1 → 4850
                tier(300, Some(0)),
                Some(percent(15, None, 0)),
                0,
                (33_333, 999, 4_850, 0, 0, 0, 27_484),
            ),
            (
                "percentage coupon capped",
                vec![line(1, 1, 1_000_000, 1)],
                tier(0, Some(0)),
                Some(percent(20, Some(50_000), 0)),
                0,
                (1_000_000, 0, 50_000, 0, 0, 0, 950_000),
            ),
            (
                "coupon limited to one product: only that line counts",
                vec![line(1, 1, 30_000, 1), line(2, 2, 70_000, 1)],
                tier(0, Some(0)),
                Some(CouponTerms {
                    product_ids: vec![2],
                    ..percent(10, None, 50_000)
                }),
                0,
                (100_000, 0, 7_000, 0, 0, 0, 93_000),
            ),
            (
                "fixed coupon larger than its lines stops at them",
                vec![line(1, 1, 5_000, 1), line(2, 2, 50_000, 1)],
                tier(0, Some(0)),
                Some(CouponTerms {
                    category_ids: vec![101],
                    ..fixed(8_000, 0)
                }),
                0,
                (55_000, 0, 5_000, 0, 0, 0, 50_000),
            ),
            (
                "fixed coupon larger than the order leaves 1 fen",
                vec![line(1, 1, 5_000, 1)],
                tier(0, Some(0)),
                Some(fixed(8_000, 0)),
                0,
                (5_000, 0, 4_999, 0, 0, 0, 1),
            ),
            (
                "points: 100 points = ¥1",
                vec![line(1, 1, 100_000, 1)],
                tier(0, Some(0)),
                None,
                2_500,
                (100_000, 0, 0, 2_500, 2_500, 0, 97_500),
            ),
            (
                "points capped at half of what is left; only the needed points are taken",
                vec![line(1, 1, 10_001, 1)],
                // after = 10001, cap = 5000 fen
                tier(0, Some(0)),
                None,
                9_000,
                (10_001, 0, 0, 5_000, 5_000, 0, 5_001),
            ),
            (
                "everything together, shipping judged after the discounts",
                vec![line(1, 1, 60_000, 1), line(2, 2, 45_000, 1)],
                // tier 3 %: 1800 + 1350 = 3150; coupon 10000; points 2000 → goods 89850 < 100000
                tier(300, Some(100_000)),
                Some(fixed(10_000, 100_000)),
                2_000,
                (105_000, 3_150, 10_000, 2_000, 2_000, 2_000, 91_850),
            ),
        ];
        for (name, lines, tier, coupon, points, want) in cases {
            let q = quote(&lines, tier, coupon.as_ref(), points, 1_000_000, RULES)
                .unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert_eq!(
                (
                    q.subtotal_fen,
                    q.tier_discount_fen,
                    q.coupon_discount_fen,
                    q.points_discount_fen,
                    q.points_used,
                    q.shipping_fen,
                    q.total_fen
                ),
                want,
                "{name}"
            );
            assert_eq!(
                q.total_fen,
                q.subtotal_fen - q.discount_fen() + q.shipping_fen,
                "{name}: total adds up"
            );
            assert!(q.total_fen >= 1, "{name}: at least 1 fen");
        }
    }

    #[test]
    fn points_worth_less_than_a_fen_rate() {
        // 150 points per yuan: 1000 points = 666.67 fen → 666 fen, which needs 999 points
        let rules = PricingRules {
            points_per_yuan: 150,
            ..RULES
        };
        let q = quote(
            &[line(1, 1, 100_000, 1)],
            tier(0, Some(0)),
            None,
            1_000,
            1_000,
            rules,
        )
        .unwrap();
        assert_eq!((q.points_discount_fen, q.points_used), (666, 999));
    }

    #[test]
    fn refusals() {
        let lines = [line(1, 1, 10_000, 1)];
        let t = tier(0, Some(0));
        assert_eq!(
            quote(&lines, t, Some(&fixed(1_000, 10_001)), 0, 0, RULES),
            Err(PricingError::CouponMinSpend {
                min_spend_fen: 10_001
            })
        );
        let elsewhere = CouponTerms {
            product_ids: vec![9],
            ..fixed(1_000, 0)
        };
        assert_eq!(
            quote(&lines, t, Some(&elsewhere), 0, 0, RULES),
            Err(PricingError::CouponNotApplicable)
        );
        assert_eq!(
            quote(&lines, t, None, 101, 100, RULES),
            Err(PricingError::PointsInsufficient { balance: 100 })
        );
        assert_eq!(
            quote(&lines, t, None, -1, 100, RULES),
            Err(PricingError::InvalidPoints)
        );
    }
}
